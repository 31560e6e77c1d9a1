//! `returner-host inspect`: what a module is, and a clear refusal of what
//! is not a returner component.

use std::process::Command;

use returner_host_tests::{guest, temp_dir};
use serde_json::Value;

use super::bin;

#[test]
fn inspect_describes_the_local_cache_module() {
    let out = Command::new(bin()).arg("inspect").arg(guest("returner-local-cache")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("world:   salt:returner@0.1.4 (exports salt:returner/returner@0.1.4)"), "{stdout}");
    for implemented in ["returner", "save_load", "get_load", "get_jid", "get_jids", "get_jids_filter", "prep_jid", "clean_old_jobs", "get_endtime"] {
        assert!(stdout.contains(&format!("  {implemented:<16} implemented")), "{implemented}: {stdout}");
    }
    assert!(stdout.contains(&format!("  {:<16} unsupported", "event_return")), "{stdout}");
    assert!(stdout.contains("wasi:filesystem/preopens"), "{stdout}");

    let out = Command::new(bin()).arg("inspect").arg("--json").arg(guest("returner-local-cache")).output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["functions"]["get_load"], true);
    assert_eq!(json["functions"]["event_return"], false);
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn inspect_refuses_what_is_not_a_returner_component() {
    let dir = temp_dir();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    // A component that exports nothing: a valid component of another world.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    for (file, want) in [
        (&text, "not a WebAssembly file"),
        (&core, "a core WebAssembly module, not a component"),
        (&empty, "not a returner component: it exports nothing"),
    ] {
        let out = Command::new(bin()).arg("inspect").arg(file).output().unwrap();
        assert!(!out.status.success(), "{} was accepted", file.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{}: {stderr}", file.display());
        assert!(stderr.contains(file.to_str().unwrap()), "names the file: {stderr}");
    }
}

#[test]
fn a_guest_opening_a_socket_loads_but_is_denied_the_connection() {
    // CPython's libc imports wasi:sockets, so the host links them, inert.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = temp_dir();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {}\n[returners.sockets]\nmodule = {}\n",
            super::toml_path(&dir.path().join("var")),
            super::toml_path(&guest("fixture-sockets"))
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["call", "--config", config.to_str().unwrap(), "sockets", "returner"])
        .arg(format!(r#"{{"ret": {{"id": "{addr}", "jid": "20261123084300320186"}}}}"#))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the connection was allowed: {stderr}");
    assert!(stderr.contains("error: denied: "), "answers a denial, not a trap: {stderr}");
    assert!(
        stderr.contains(r#"capability="network" operation="create-tcp-socket" target="ipv4" outcome="denied""#),
        "the denial is audited: {stderr}"
    );
    assert!(!stderr.contains("trap"), "{stderr}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest reached {addr}"
    );
}

/// A guest built against `salt:returner@0.1.2`, before the `http` import,
/// loads on this host and runs: its imports resolve to the newer
/// interfaces, and it is not offered (nor does it need) `http`.
#[test]
fn a_guest_built_against_an_older_wit_loads_and_runs() {
    let module = guest("fixture-wit-0-1-2");
    let out = Command::new(bin()).arg("inspect").arg(&module).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("salt:returner/returner@0.1.2"), "{stdout}");
    assert!(stdout.contains("salt:returner/log@0.1.2") && !stdout.contains("salt:returner/http"), "{stdout}");

    let dir = temp_dir();
    let d = super::config_daemon(
        dir.path(),
        "",
        &format!("[returners.old]\nmodule = {}\noptions = {{ kept = \"yes\" }}\n", super::toml_path(&module)),
    );
    let ret = serde_json::json!({ "id": "m1", "jid": "20261130120000000001", "fun": "test.ping", "return": true });
    d.write("old", "returner", &serde_json::json!({ "ret": ret })).result();
    assert_eq!(d.call("old", "get_load", &serde_json::json!({ "jid": "20261130120000000001" })).result(), &serde_json::json!({ "kept": "yes" }));
    assert!(d.log_text().contains("0.1.2 guest stored 20261130120000000001 of m1"), "{}", d.log_text());
}
