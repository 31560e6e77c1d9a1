//! Salt's side of the host: the stdlib-only Python returner module
//! (`salt/_returners/wasm.py`, embedded) and `returner-host salt-returner`,
//! which prints it under another Salt name with its own defaults, so that
//! `--return wasm_mysql` reaches the host's `mysql` returner without anyone
//! editing a copy by hand.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The Salt returner module as shipped: Salt name `wasm`.
pub const SHIM: &str = include_str!("../../salt/_returners/wasm.py");

const NAME_LINE: &str = "__virtualname__ = \"wasm\"\n";
const DEFAULTS_PREFIX: &str = "DEFAULTS = ";

/// What `salt-returner` bakes into the module; `None` keeps the shipped default.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ShimSettings {
    /// The Salt name: `--return NAME`, `master_job_cache: NAME`, options `NAME.*`.
    pub name: String,
    /// The host returner that serves it (default `local_cache`).
    #[arg(long)]
    pub returner: Option<String>,
    /// Unix socket path or `http://127.0.0.1:PORT` (default `/run/returner-host/sock`).
    #[arg(long)]
    pub url: Option<String>,
    /// File holding the bearer token (needed over TCP).
    #[arg(long)]
    pub token_file: Option<String>,
    /// Seconds per call (default 10).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Seconds a call keeps trying to reach the host while it cannot connect (default 10).
    #[arg(long)]
    pub retry_seconds: Option<f64>,
}

/// `returner-host salt-returner`: print the module for `settings`.
pub fn print(settings: &ShimSettings) -> anyhow::Result<std::process::ExitCode> {
    let module = render(settings).map_err(anyhow::Error::msg)?;
    print!("{module}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// The module for `settings`, or what is wrong with them.
pub fn render(settings: &ShimSettings) -> Result<String, String> {
    check_salt_name(&settings.name)?;
    if let Some(returner) = &settings.returner {
        crate::config::check_returner_name(returner)?;
    }
    if let Some(url) = &settings.url {
        check_url(url)?;
    }
    if let Some(timeout) = settings.timeout
        && !(timeout.is_finite() && timeout > 0.0)
    {
        return Err(format!("--timeout must be a positive number of seconds, not {timeout}"));
    }
    if let Some(retry) = settings.retry_seconds
        && !(retry.is_finite() && retry >= 0.0)
    {
        return Err(format!("--retry-seconds must be a number of seconds, 0 or more, not {retry}"));
    }
    let mut defaults = shipped_defaults();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            defaults.insert(key.to_owned(), value);
        }
    };
    set("returner", settings.returner.clone().map(Value::String));
    set("url", settings.url.clone().map(Value::String));
    set("token_file", settings.token_file.clone().map(Value::String));
    set("timeout", settings.timeout.and_then(serde_json::Number::from_f64).map(Value::Number));
    set("retry_seconds", settings.retry_seconds.and_then(serde_json::Number::from_f64).map(Value::Number));

    let mut out = String::with_capacity(SHIM.len() + 256);
    for line in SHIM.split_inclusive('\n') {
        if line == NAME_LINE {
            writeln!(out, "__virtualname__ = {}", python_literal(&Value::String(settings.name.clone()))).ok();
        } else if line.starts_with(DEFAULTS_PREFIX) {
            writeln!(out, "{DEFAULTS_PREFIX}{}", python_literal(&Value::Object(defaults.clone()))).ok();
        } else {
            out.push_str(line);
        }
    }
    Ok(out)
}

/// The `DEFAULTS` of the shipped module, read from its text so they live in
/// one place.
fn shipped_defaults() -> Map<String, Value> {
    let line = SHIM
        .lines()
        .find_map(|l| l.strip_prefix(DEFAULTS_PREFIX))
        .expect("salt/_returners/wasm.py has a DEFAULTS line");
    // The line is a Python dict of strings, numbers and None.
    match serde_json::from_str(&line.replace("None", "null")) {
        Ok(Value::Object(map)) => map,
        other => panic!("the DEFAULTS line of salt/_returners/wasm.py is not a plain dict: {other:?}"),
    }
}

/// Salt loads a returner as a Python module and looks it up by this name.
fn check_salt_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Salt name `{name}` must be a Python identifier: an ASCII letter or `_`, then letters, digits and `_` (64 at most)"
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.chars().any(char::is_control) {
        return Err("--url must not contain control characters".to_owned());
    }
    let ok = url.starts_with('/') || url.starts_with("unix:/") || url.starts_with("http://");
    if ok {
        Ok(())
    } else {
        Err(format!("--url `{url}` must be an absolute unix socket path, unix:/PATH, or http://HOST:PORT"))
    }
}

/// A Python literal for a JSON value of strings, numbers, booleans, null
/// and objects (JSON's string escapes are all valid in Python).
fn python_literal(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(_) | Value::String(_) => value.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(python_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(name: &str) -> ShimSettings {
        ShimSettings { name: name.to_owned(), ..Default::default() }
    }

    #[test]
    fn the_shipped_module_has_the_lines_the_generator_rewrites() {
        assert_eq!(SHIM.matches(NAME_LINE).count(), 1);
        assert_eq!(SHIM.lines().filter(|l| l.starts_with(DEFAULTS_PREFIX)).count(), 1);
        let defaults = shipped_defaults();
        assert_eq!(defaults["returner"], "local_cache");
        assert_eq!(defaults["token_file"], Value::Null);
        assert_eq!(defaults["retry_seconds"], 10);
    }

    #[test]
    fn wasm_with_no_settings_is_the_shipped_module() {
        assert_eq!(render(&settings("wasm")).unwrap(), SHIM);
    }

    #[test]
    fn a_new_name_gets_its_name_and_defaults() {
        let out = render(&ShimSettings {
            name: "wasm_mysql".into(),
            returner: Some("mysql".into()),
            url: Some("http://127.0.0.1:4510".into()),
            token_file: Some("/etc/salt/tok\"en".into()),
            timeout: Some(2.5),
            retry_seconds: Some(30.0),
        })
        .unwrap();
        assert!(out.contains("\n__virtualname__ = \"wasm_mysql\"\n"));
        assert!(out.contains(
            r#"DEFAULTS = {"retry_seconds": 30.0, "returner": "mysql", "timeout": 2.5, "token_file": "/etc/salt/tok\"en", "url": "http://127.0.0.1:4510"}"#
        ));
        assert_eq!(out.lines().count(), SHIM.lines().count());
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        assert!(render(&settings("wasm-mysql")).unwrap_err().contains("Python identifier"));
        assert!(render(&settings("1x")).unwrap_err().contains("Python identifier"));
        assert!(render(&settings("")).unwrap_err().contains("Python identifier"));
        let bad_returner = ShimSettings { returner: Some("my sql".into()), ..settings("x") };
        assert!(render(&bad_returner).unwrap_err().contains("returner name"));
        let bad_url = ShimSettings { url: Some("relative.sock".into()), ..settings("x") };
        assert!(render(&bad_url).unwrap_err().contains("absolute unix socket path"));
        let newline = ShimSettings { url: Some("/a\n\"; import os".into()), ..settings("x") };
        assert!(render(&newline).unwrap_err().contains("control characters"));
        let zero = ShimSettings { timeout: Some(0.0), ..settings("x") };
        assert!(render(&zero).unwrap_err().contains("positive"));
        let never = ShimSettings { retry_seconds: Some(-1.0), ..settings("x") };
        assert!(render(&never).unwrap_err().contains("--retry-seconds"));
        let once = ShimSettings { retry_seconds: Some(0.0), ..settings("x") };
        assert!(render(&once).unwrap().contains(r#""retry_seconds": 0.0"#));
    }
}
