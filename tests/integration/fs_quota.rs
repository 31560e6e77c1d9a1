//! The quota of a read-write `fs` grant through the real daemon: a guest
//! filling its directory every way WASI offers (writes, appends, a file's
//! length, a write far past the end, many empty files) gets an error and the
//! directory stays within its quota; what it frees is found again; a
//! returner under its quota is not disturbed; a local cache at its quota
//! holds its returns in the spool, saying why, until the quota is raised.

use std::path::Path;
use std::time::Duration;

use returner_host_tests::{Daemon, count_files, guest, temp_dir};
use serde_json::{Value, json};

use super::hostile::audit_events;
use super::{config_daemon, toml_path};

/// The filler's quota.
const QUOTA_MIB: u64 = 4;
const QUOTA: u64 = QUOTA_MIB * 1024 * 1024;
/// What each entry counts beside its length (the host's `ENTRY_BYTES`).
const ENTRY_BYTES: u64 = 4096;
/// Longer than the host's least time between two walks of a directory.
const AFTER_RECOUNT_INTERVAL: Duration = Duration::from_millis(300);

/// The directory's size as the quota counts it: each entry's length plus
/// `ENTRY_BYTES`, without following symbolic links.
fn counted(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            ENTRY_BYTES + if meta.is_dir() { counted(&entry.path()) } else { meta.len() }
        })
        .sum()
}

/// The filler's answer to one fill: `(written, error kind)`.
fn fill(d: &Daemon, spec: &str) -> (u64, Option<String>) {
    let r = d.call("filler", "get_endtime", &json!({ "jid": spec }));
    let answer: Value = serde_json::from_str(r.result().as_str().unwrap_or_else(|| panic!("{spec}: {:?}", r.json))).unwrap();
    (answer["written"].as_u64().unwrap(), answer["kind"].as_str().map(str::to_owned))
}

#[test]
fn writes_past_the_fs_quota_fail_and_are_not_kept() {
    let dir = temp_dir();
    let (filled, jobs) = (dir.path().join("filled"), dir.path().join("jobs"));
    std::fs::create_dir_all(&filled).unwrap();
    std::fs::create_dir_all(&jobs).unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let d = config_daemon(
        dir.path(),
        &format!("audit_log = {}", toml_path(&audit_log)),
        &format!(
            r#"
[returners.filler]
module = {filler}
limits = {{ deadline_ms = 30000 }}
grants.fs = {{ dir = {filled}, mode = "rw", quota_mib = {QUOTA_MIB} }}

[returners.local_cache]
module = "builtin:local-cache"
grants.fs = {{ dir = {jobs}, mode = "rw" }}
"#,
            filler = toml_path(&guest("fixture-filler")),
            filled = toml_path(&filled),
            jobs = toml_path(&jobs),
        ),
    );

    // Under the quota, writes go through.
    assert_eq!(fill(&d, "write:2"), (2 * 1024 * 1024, None));
    assert_eq!(counted(&filled), ENTRY_BYTES + 2 * 1024 * 1024);

    // Past it, every way of growing the directory is refused, and what did
    // not fit is not on disk. Freeing space makes room again.
    for spec in ["write:16", "append:16", "set-size:16", "seek:100", "files:5000"] {
        assert_eq!(fill(&d, "clean"), (0, None));
        std::thread::sleep(AFTER_RECOUNT_INTERVAL);
        let (written, kind) = fill(&d, spec);
        // Descriptor calls answer `insufficient-space`; wasi-libc reports a
        // failed stream write (the file writes of Rust's std) as EIO.
        let expected = if spec.starts_with("set-size") || spec.starts_with("files") { "StorageFull" } else { "Uncategorized" };
        assert_eq!(kind.as_deref(), Some(expected), "{spec}: the guest gets an error");
        let size = counted(&filled);
        assert!(size <= QUOTA, "{spec}: the directory holds {size} bytes, over its quota of {QUOTA}");
        if spec.starts_with("write") || spec.starts_with("append") {
            assert!(written >= QUOTA - 1024 * 1024 - ENTRY_BYTES, "{spec}: the room there was is usable ({written} bytes)");
        }
        if spec.starts_with("files") {
            assert!((QUOTA / ENTRY_BYTES - 2..5000).contains(&written), "{spec}: {written} files");
        }
    }

    // The refusals are audited, one event each, naming the directory.
    let events = audit_events(&audit_log);
    let refusals: Vec<&Value> = events.iter().filter(|e| e["fields"]["capability"] == "fs").collect();
    assert_eq!(refusals.len(), 5, "{refusals:#?}");
    for e in &refusals {
        assert_eq!((e["fields"]["returner"].as_str(), e["fields"]["outcome"].as_str()), (Some("filler"), Some("denied")));
        assert_eq!(e["fields"]["target"].as_str(), Some(filled.to_str().unwrap()));
    }
    assert_eq!(d.metrics().get(r#"returner_host_denials_total{returner="filler",capability="fs"}"#), Some(&5.0));

    // A returner under its quota works as before.
    let ret = json!({ "id": "m1", "jid": "20261130010203040506", "fun": "test.ping", "return": true, "retcode": 0, "success": true });
    d.write("local_cache", "returner", &json!({ "ret": ret })).result();
    let back = d.call("local_cache", "get_jid", &json!({ "jid": "20261130010203040506" }));
    assert_eq!(back.result()["m1"]["return"], json!(true));
}

/// What stopped the soak at 100,000 returns (BENCHMARKS.md): the local
/// cache's quota filled and every delivery failed from then on, with the
/// guest's "No space left on device" as the only word of it.
#[test]
fn a_local_cache_at_its_quota_holds_its_returns_says_it_is_the_quota_and_delivers_once_raised() {
    let dir = temp_dir();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let returner = |quota_mib: u64| {
        format!(
            "[returners.local_cache]\nmodule = \"builtin:local-cache\"\ngrants.fs = {{ dir = {}, mode = \"rw\", quota_mib = {quota_mib} }}\n",
            toml_path(&jobs)
        )
    };
    let d = config_daemon(dir.path(), "", &returner(1));
    // About 33 KB each as the quota counts them: 1 MiB holds some 30.
    let ret = |n: u64| {
        json!({ "ret": { "id": "m1", "jid": format!("2026113001{n:010}"), "fun": "test.ping", "return": "x".repeat(12 * 1024), "retcode": 0, "success": true } })
    };
    for n in 0..100 {
        d.call("local_cache", "returner", &ret(n)).result();
    }
    let error = d.delivery_error("local_cache", Duration::from_secs(60));
    assert!(error.contains("quota of 1 MiB is full") && error.contains(jobs.to_str().unwrap()), "names the quota: {error}");
    let stored = count_files(&jobs, "return.p");
    assert!((10..100).contains(&stored), "stored until the quota was full: {stored}");
    assert!(counted(&jobs) <= 1024 * 1024, "{} bytes", counted(&jobs));

    // The admin raises the quota and reloads: the held returns follow.
    let config = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(&returner(1), &returner(64));
    std::fs::write(&config, text).unwrap();
    std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    d.settle("local_cache", Duration::from_secs(60));
    assert_eq!(count_files(&jobs, "return.p"), 100);
    assert!(d.dead_letters("local_cache").is_empty());
}

#[test]
fn an_fs_quota_of_zero_is_a_config_error() {
    let dir = temp_dir();
    let text = format!(
        "[returners.lc]\nmodule = \"builtin:local-cache\"\ngrants.fs = {{ dir = {}, mode = \"rw\", quota_mib = 0 }}\n",
        toml_path(dir.path())
    );
    std::fs::write(dir.path().join("bad.toml"), text).unwrap();
    let out = std::process::Command::new(super::bin()).args(["check", "--config"]).arg(dir.path().join("bad.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("returners.lc.grants.fs.quota_mib") && stderr.contains("at least 1 MiB"), "{stderr}");
}
