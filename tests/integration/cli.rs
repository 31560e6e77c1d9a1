//! The same local-cache functions through `returner-host call`, plus
//! `check`, and how `serve` starts (what it refuses, the socket it makes):
//! one call per process, no daemon.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use returner_host_tests::{salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

use super::{bin, toml_path};

/// Run `returner-host call --data-dir DATA local_cache FUNCTION ARGS`.
fn call(data: &Path, function: &str, args: &Value) -> Value {
    let out = Command::new(bin())
        .args(["call", "--data-dir", data.to_str().unwrap(), "local_cache", function, &args.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "call {function} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{function} printed no JSON ({e}): {:?}", out.stdout))
}

#[test]
fn every_function_through_call() {
    let dir = temp_dir();
    let data = dir.path().join("var");
    let returns = salt_fixture_lines("minion-returns.jsonl");
    for ret in &returns {
        assert_eq!(call(&data, "returner", &json!({ "ret": ret })), Value::Null);
    }
    for ret in &returns {
        let got = call(&data, "get_jid", &json!({ "jid": ret["jid"] }));
        assert_eq!(got["m1"]["return"], ret["return"], "get_jid {}", ret["jid"]);
        assert_eq!(got["m1"]["retcode"], ret["retcode"]);
    }

    let jid = "20261123100000000001";
    let load = json!({ "fun": "test.echo", "arg": ["ünï"], "tgt": "m1", "tgt_type": "glob", "user": "root", "jid": jid });
    assert_eq!(call(&data, "prep_jid", &json!({ "passed_jid": jid })), json!(jid));
    assert_eq!(call(&data, "save_load", &json!({ "jid": jid, "load": load, "minions": ["m1"] })), Value::Null);
    assert_eq!(call(&data, "save_load", &json!({ "jid": jid, "load": { "fun": "other" } })), Value::Null);
    let got = call(&data, "get_load", &json!({ "jid": jid }));
    assert_eq!(got["fun"], "test.echo");
    assert_eq!(got["arg"], json!(["ünï"]));
    assert_eq!(got["Minions"], json!(["m1"]));

    assert_eq!(call(&data, "save_minions", &json!({ "jid": jid, "minions": ["m1", "m2"] })), Value::Null);
    assert_eq!(call(&data, "get_load", &json!({ "jid": jid }))["Minions"], json!(["m1", "m2"]));

    let jids = call(&data, "get_jids", &json!({}));
    assert_eq!(jids[jid]["Function"], "test.echo");
    assert_eq!(jids[jid]["Arguments"], json!(["ünï"]));
    assert_eq!(jids[jid]["StartTime"], "2026, Nov 23 10:00:00.000001");
    let filtered = call(&data, "get_jids_filter", &json!({ "count": 1 }));
    assert_eq!(filtered, json!([{
        "Function": "test.echo", "Arguments": ["ünï"], "Target": "m1", "Target-type": "glob",
        "User": "root", "JID": jid, "StartTime": "2026, Nov 23 10:00:00.000001"
    }]));

    assert_eq!(call(&data, "get_endtime", &json!({ "jid": jid })), json!(false));
    assert_eq!(call(&data, "update_endtime", &json!({ "jid": jid, "time": "2026, Nov 23 10:00:05.000000" })), Value::Null);
    assert_eq!(call(&data, "get_endtime", &json!({ "jid": jid })), json!("2026, Nov 23 10:00:05.000000"));
    assert_eq!(call(&data, "get_minions", &json!({})), json!(["m1"]));
    assert_eq!(call(&data, "get_fun", &json!({ "fun": "test.echo" })), json!({}), "no return of test.echo for a loaded job yet");
    assert_eq!(call(&data, "clean_old_jobs", &json!({})), Value::Null);
    assert_eq!(call(&data, "get_load", &json!({ "jid": jid }))["fun"], "test.echo", "a new job survives cleaning");
}

#[test]
fn call_reads_arguments_from_stdin() {
    let dir = temp_dir();
    let data = dir.path().join("var");
    let mut child = Command::new(bin())
        .args(["call", "--data-dir", data.to_str().unwrap(), "local_cache", "prep_jid", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(br#"{"passed_jid": "20261123100000000009"}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""20261123100000000009""#);
}

#[test]
fn call_failures_exit_non_zero_with_one_line() {
    let dir = temp_dir();
    let data = dir.path().join("var");
    let cases: [(&[&str], &str); 4] = [
        (&["local_cache", "get_load", "{"], "bad_request: the body of get_load is not valid JSON"),
        (&["local_cache", "no_such_function", "{}"], "no returner function `no_such_function`"),
        (&["nope", "get_load", "{}"], "no returner `nope`"),
        (&["local_cache", "event_return", r#"{"events": []}"#], "'local_cache.event_return' is not available."),
    ];
    for (args, want) in cases {
        let out = Command::new(bin())
            .args(["call", "--data-dir", data.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn check_validates_config_and_modules() {
    let dir = temp_dir();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[server]\ndata_dir = {}\n[returners.lc]\nmodule = \"builtin:local-cache\"\n[returners.lc.grants.fs]\ndir = {}\nmode = \"rw\"\n",
            toml_path(&dir.path().join("var")),
            toml_path(&jobs)
        ),
    )
    .unwrap();
    let out = Command::new(bin()).args(["check", "--config", good.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("returner lc: builtin:local-cache"), "{stdout}");
    assert!(stdout.contains("salt:returner/returner@0.1.4"), "{stdout}");

    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let bad = dir.path().join("bad.toml");
    for (text, want) in [
        ("[returners.x]\nmodule = \"builtin:local-cache\"\nlimit = {}\n".to_owned(), "unknown field `limit`"),
        (format!("[returners.x]\nmodule = {}\n", toml_path(&not_wasm)), "not a WebAssembly file"),
        ("[returners.x]\nmodule = \"builtin:nope\"\n".to_owned(), "key `returners.x.module`"),
        (format!("[returners.x]\nmodule = \"builtin:local-cache\"\nsha256 = \"{}\"\n", "ab".repeat(32)), "pins abab"),
        ("[returners.x]\nmodule = \"builtin:local-cache\"\n[returners.x.grants.fs]\ndir = \"/nonexistent/dir\"\nmode = \"rw\"\n".to_owned(), "key `returners.x.grants.fs.dir`"),
    ] {
        std::fs::write(&bad, &text).unwrap();
        // Run in the temp dir: a config without data_dir uses ./var.
        let out = Command::new(bin()).current_dir(dir.path()).args(["check", "--config", bad.to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} passed the check");
        assert!(stderr.contains(bad.to_str().unwrap()) || stderr.contains("returner `x`"), "names the file or returner: {stderr}");
        assert!(stderr.contains(want), "{text}: {stderr}");
    }
}

#[test]
fn a_grant_over_data_dir_is_refused_by_check_and_serve() {
    let dir = temp_dir();
    let data = dir.path().join("var");
    std::fs::create_dir_all(data.join("compiled")).unwrap();
    std::fs::create_dir_all(data.join("jobs")).unwrap();
    std::os::unix::fs::symlink(&data, dir.path().join("alias")).unwrap();
    let config = dir.path().join("host.toml");
    let write = |granted: &Path| {
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = {}\nlisten = \"unix:{}\"\n[returners.lc]\nmodule = \"builtin:local-cache\"\n[returners.lc.grants.fs]\ndir = {}\nmode = \"rw\"\n",
                toml_path(&data),
                dir.path().join("host.sock").display(),
                toml_path(granted)
            ),
        )
        .unwrap();
    };
    let granted_dirs = [data.join("compiled"), data.clone(), dir.path().to_owned(), dir.path().join("alias")];
    for granted in &granted_dirs {
        write(granted);
        for command in ["check", "serve"] {
            let out = Command::new(bin()).args([command, "--config", config.to_str().unwrap()]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} accepted a grant of {}", granted.display());
            assert!(stderr.contains(config.to_str().unwrap()), "{command}: names the file: {stderr}");
            assert!(stderr.contains("key `returners.lc.grants.fs.dir`"), "{command}: names the key: {stderr}");
            assert!(stderr.contains("the host's own"), "{command}: says why: {stderr}");
        }
    }
    // The data dir's job cache, beside the host's own directories, may be granted.
    write(&data.join("jobs"));
    let out = Command::new(bin()).args(["check", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `sh -c 'umask 000; exec returner-host serve ARGS'`: whatever the modes of
/// what it makes are, they are not the umask's doing.
fn serve_under_open_umask(args: &[&str], log: &Path) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" serve \"$@\"")
        .arg(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn the_socket_is_private_from_the_start() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let dir = temp_dir();
    let data = dir.path().join("var");
    let socket = data.join("returner-host.sock");
    let mut child = serve_under_open_umask(&["--data-dir", data.to_str().unwrap()], &dir.path().join("daemon.log"));
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(dir.path().join("daemon.log")).unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the socket's mode");
    // The directories the host made are its own, though the umask allowed anyone.
    for made in [data.clone(), data.join("compiled"), data.join("jobs")] {
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", made.display());
    }
    // The private directory it was bound in is gone.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".returner-host-bind"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_socket_in_a_world_writable_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let listen = format!("unix:{}", open.join("sock").display());
    let data = dir.path().join("var");
    let out = Command::new(bin())
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("writable by every user and not sticky"), "{stderr}");
    // Sticky (as /tmp is): nobody can remove another user's socket there.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(open.join("sock")).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve ended in a sticky directory");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
