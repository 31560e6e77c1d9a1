//! The runtime's promises seen from outside: a fresh instance per call, the
//! per-returner concurrency limit, and compiled modules reused across
//! restarts.

use std::time::{Duration, Instant};

use returner_host_tests::{guest, temp_dir};
use serde_json::json;

use super::{config_daemon, default_daemon, toml_path};

#[test]
fn every_call_gets_a_fresh_instance() {
    let dir = temp_dir();
    let d = config_daemon(dir.path(), "", &format!("[returners.noop]\nmodule = {}\n", toml_path(&guest("fixture-noop"))));
    for _ in 0..5 {
        let r = d.call("noop", "get_jids", &json!({}));
        assert_eq!(r.result(), &json!({ "calls": 1 }), "state leaked from an earlier call");
    }
}

#[test]
fn max_concurrency_bounds_calls_in_flight() {
    let dir = temp_dir();
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            "[returners.noop]\nmodule = {}\nlimits = {{ max_concurrency = 2, deadline_ms = 5000 }}\n",
            toml_path(&guest("fixture-noop"))
        ),
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                returner_host_tests::http_unix(
                    &socket,
                    "POST",
                    "/v1/returners/noop/get_fun",
                    &[],
                    json!({ "fun": "sleep:400" }).to_string().as_bytes(),
                )
            })
        })
        .collect();
    for c in calls {
        let r = c.join().unwrap();
        assert_eq!(r.result(), &json!({}));
    }
    // Four 400 ms calls two at a time cannot finish in under two rounds.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "4 calls of 400 ms with max_concurrency 2 took only {took:?}");
}

#[test]
fn compiled_modules_are_reused_across_restarts() {
    let dir = temp_dir();
    let compiled = dir.path().join("var/compiled");
    let sha = {
        let out = std::process::Command::new(super::bin())
            .args(["inspect", "--json"])
            .arg(guest("returner-local-cache"))
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        info["sha256"].as_str().unwrap().to_owned()
    };
    let cached = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&compiled).unwrap().map(|e| e.unwrap().path()).collect()
    };

    drop(default_daemon(dir.path()));
    let files = cached();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with(&format!("{sha}-")) && name.ends_with(".cwasm"), "{name}");
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // A restart loads the cached file instead of compiling and writing it again.
    std::thread::sleep(Duration::from_millis(20));
    let d = default_daemon(dir.path());
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    assert_eq!(std::fs::metadata(&files[0]).unwrap().modified().unwrap(), written);
    drop(d);

    // A damaged cache file is replaced, not trusted.
    std::fs::write(&files[0], b"garbage").unwrap();
    let d = default_daemon(dir.path());
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 1000, "recompiled and rewritten");
    assert!(d.log_text().contains("discarding unusable compiled module"), "{}", d.log_text());
}
