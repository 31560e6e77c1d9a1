//! The `webhook` returner: one JSON POST per job return to the endpoint of
//! its http grant, shaped by a template, for Slack and Mattermost incoming
//! webhooks, Teams, or an in-house API. Write-only: every read answers
//! `unsupported`, as Salt's own write-only returners (slack, mattermost)
//! do.
//!
//! Options (`options = { ... }` in the host config):
//! - `path`: where to POST, relative to the profile's base URL (default
//!   `""`, the base URL itself, as a webhook URL is).
//! - `text`: a Slack/Mattermost message; the body is `{"text": TEXT}`.
//! - `template`: any JSON value; the body is it, rendered. Without `text`
//!   and `template` the body is the whole return as Salt sent it.
//! - `functions`: send only returns of these functions; `skip_functions`:
//!   never these (default `["saltutil.find_job"]`, Salt's own polling).
//! - `events`: also POST each event of `event_return`, rendered with
//!   `event_template` (default `{"tag": "{tag}", "data": "{data}"}`).
//!
//! Rendering: in every string of the template, `{field}` is replaced by
//! the return's field: `id`, `jid`, `fun`, `retcode`, `success`,
//! `outcome` (`succeeded`, or `failed` when `success` is false or
//! `retcode` is not 0), `fun_args` and `return` (JSON text unless a
//! string); `{{` and `}}` stand for braces. A string that is exactly one
//! placeholder becomes the field's JSON value itself (`"{return}"` keeps
//! the return's structure). For events: `tag` and `data`.
//!
//! A status of 5xx or 429, or an unreachable endpoint, is `backend` (the
//! host keeps the return and delivers it again); another 4xx is `invalid`
//! (a dead letter: the endpoint refuses it). A return is POSTed at least
//! once: after a crash between the endpoint's answer and the spool's
//! record, the endpoint sees it again.

use returner_sdk::serde_json::Map;
use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, config, http, json};

/// The `webhook` returner.
pub struct Webhook;

returner_sdk::export_returner!(Webhook);

/// Salt's own polling of running jobs: noise in a channel.
const DEFAULT_SKIP: &[&str] = &["saltutil.find_job"];

fn option_list(key: &str) -> Result<Option<Vec<String>>> {
    config::get_as::<Vec<String>>(key)
}

/// Whether a return of `fun` is sent.
fn wanted(fun: &str) -> Result<bool> {
    if let Some(only) = option_list("functions")? {
        if !only.iter().any(|f| f == fun) {
            return Ok(false);
        }
    }
    let skip = option_list("skip_functions")?.unwrap_or_else(|| DEFAULT_SKIP.iter().map(|s| (*s).to_owned()).collect());
    Ok(!skip.iter().any(|f| f == fun))
}

/// The fields a template may name, for one return.
fn return_fields(ret: &JobReturn) -> Map<String, Value> {
    let failed = ret.success == Some(false) || ret.retcode.is_some_and(|c| c != 0);
    let mut f = Map::new();
    f.insert("id".into(), json!(ret.id));
    f.insert("jid".into(), json!(ret.jid));
    f.insert("fun".into(), json!(ret.fun));
    f.insert("fun_args".into(), ret.fun_args.clone());
    f.insert("return".into(), ret.ret.clone());
    f.insert("retcode".into(), ret.retcode.map_or(Value::Null, |c| json!(c)));
    f.insert("success".into(), ret.success.map_or(Value::Null, Value::Bool));
    f.insert("outcome".into(), json!(if failed { "failed" } else { "succeeded" }));
    f
}

/// A field as text in a string: strings as they are, the rest as JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Render one template string.
fn render_str(s: &str, fields: &Map<String, Value>) -> Result<Value> {
    if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if let Some(v) = fields.get(name) {
            return Ok(v.clone());
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(name) = tail.strip_prefix('{').and_then(|t| t.split_once('}')).map(|(n, _)| n) {
            let v = fields.get(name).ok_or_else(|| {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                Error::invalid("option `template`", format!("unknown placeholder `{{{name}}}`; known: {}", known.join(", ")))
            })?;
            out.push_str(&as_text(v));
            rest = &tail[name.len() + 2..];
        } else {
            return Err(Error::invalid("option `template`", format!("unbalanced brace in {s:?}; write `{{{{` or `}}}}` for a brace")));
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// Render a template value: every string in it, keys untouched.
fn render(template: &Value, fields: &Map<String, Value>) -> Result<Value> {
    Ok(match template {
        Value::String(s) => render_str(s, fields)?,
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, fields)).collect::<Result<_>>()?),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), render(v, fields)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn post(body: &Value) -> Result<()> {
    let path: String = config::get_as("path")?.unwrap_or_default();
    http::post_json(&path, body)?.check()?;
    Ok(())
}

/// The body for one return, from the options.
fn body_of(ret: &JobReturn) -> Result<Value> {
    let fields = return_fields(ret);
    if let Some(text) = config::get_as::<String>("text")? {
        return Ok(json!({ "text": render_str(&text, &fields)? }));
    }
    match config::get("template") {
        Some(template) => render(&template, &fields),
        None => Ok(ret.full.clone()),
    }
}

impl Returner for Webhook {
    fn returner(ret: JobReturn) -> Result<()> {
        if !wanted(&ret.fun)? {
            return Ok(());
        }
        post(&body_of(&ret)?)
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        if !config::get_as::<bool>("events")?.unwrap_or(false) {
            return Ok(());
        }
        let template = config::get("event_template").unwrap_or_else(|| json!({ "tag": "{tag}", "data": "{data}" }));
        for event in events {
            let mut fields = Map::new();
            fields.insert("tag".into(), json!(event.tag));
            fields.insert("data".into(), event.data);
            post(&render(&template, &fields)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret() -> JobReturn {
        let full = json!({"id": "m1", "jid": "20261123084300973691", "fun": "cmd.run", "fun_args": ["exit 3"], "return": "", "retcode": 3, "success": true});
        JobReturn {
            id: "m1".into(),
            jid: "20261123084300973691".into(),
            fun: "cmd.run".into(),
            fun_args: json!(["exit 3"]),
            ret: json!(""),
            retcode: Some(3),
            success: Some(true),
            full,
        }
    }

    #[test]
    fn templates_render_fields_as_text_or_as_values() {
        let fields = return_fields(&ret());
        assert_eq!(
            render_str("{id} ran {fun} ({jid}): {outcome}, retcode {retcode}, args {fun_args} {{literal}}", &fields).unwrap(),
            json!("m1 ran cmd.run (20261123084300973691): failed, retcode 3, args [\"exit 3\"] {literal}")
        );
        let t = json!({"attachments": [{"title": "{fun}", "fields": "{fun_args}", "n": 1}], "r": "{retcode}"});
        assert_eq!(
            render(&t, &fields).unwrap(),
            json!({"attachments": [{"title": "cmd.run", "fields": ["exit 3"], "n": 1}], "r": 3})
        );
        assert!(matches!(render_str("{nope}", &fields), Err(Error::Invalid(m)) if m.contains("nope")));
        assert!(matches!(render_str("a { b", &fields), Err(Error::Invalid(m)) if m.contains("brace")));
    }
}
