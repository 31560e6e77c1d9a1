//! The runtime's promises seen from outside: a fresh instance per call, the
//! per-returner concurrency limit, a full instance pool reported as a limit,
//! and compiled modules reused across restarts, but never one the host did
//! not seal.

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
fn a_full_pool_is_a_limit_for_the_caller_not_a_trap() {
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    let spin = toml_path(&guest("fixture-spin"));
    let d = config_daemon(
        dir.path(),
        &format!("instance_slots = 4\naudit_log = {}", toml_path(&audit_log)),
        &format!(
            r#"
[returners.hog_a]
module = {spin}
limits = {{ max_concurrency = 2, deadline_ms = 4000 }}
[returners.hog_b]
module = {spin}
limits = {{ max_concurrency = 2, deadline_ms = 4000 }}
[returners.noop]
module = {noop}
"#,
            noop = toml_path(&guest("fixture-noop")),
        ),
    );
    // Two calls of each hog hold the pool's four slots until their deadline.
    let hogs: Vec<_> = ["hog_a", "hog_a", "hog_b", "hog_b"]
        .into_iter()
        .map(|name| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let path = format!("/v1/returners/{name}/get_load");
                returner_host_tests::http_unix(&socket, "POST", &path, &[], json!({ "jid": "1" }).to_string().as_bytes())
            })
        })
        .collect();
    let in_flight = |name: &str| d.metrics().get(&format!("returner_host_calls_in_flight{{returner=\"{name}\"}}")).copied();
    let started = Instant::now();
    while in_flight("hog_a") != Some(2.0) || in_flight("hog_b") != Some(2.0) {
        assert!(started.elapsed() < Duration::from_secs(3), "the hogs' calls did not all start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // In flight counts from the slot; give the instances time to exist.
    std::thread::sleep(Duration::from_millis(300));

    let r = d.call("noop", "get_jid", &json!({ "jid": "1" }));
    assert_eq!((r.status, r.error().0), (429, "limit"), "{:?}", r.json);
    let message = r.error().1;
    assert!(message.contains("no free instance slot in the host's pool") && message.contains("server.instance_slots = 4"), "{message}");
    let metrics = d.metrics();
    assert_eq!(metrics.get(r#"returner_host_limited_total{returner="noop",kind="pool"}"#), Some(&1.0), "counted as a pool limit");
    let noop_faults: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("returner_host_guest_faults_total") && k.contains(r#"returner="noop""#))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(noop_faults, 0.0, "not counted as the caller's fault: {metrics:?}");

    for hog in hogs {
        let r = hog.join().unwrap();
        assert_eq!((r.status, r.error().0), (504, "deadline"), "{:?}", r.json);
    }
    assert_eq!(d.call("noop", "get_jid", &json!({ "jid": "1" })).result(), &json!({}), "the slots are free again");
    // The audit log is written by a thread of its own: read it once it has settled.
    let audit = returner_host_tests::settled_audit_log(&audit_log);
    assert!(!audit.lines().any(|l| l.contains(r#""returner":"noop""#)), "the caller is not audited: {audit}");
    assert_eq!(audit.lines().filter(|l| l.contains(r#""outcome":"deadline""#)).count(), 4, "{audit}");
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
        std::fs::read_dir(&compiled)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
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
    assert!(d.log_text().contains("compiled module failed its check; compiled again"), "{}", d.log_text());
}

#[test]
fn a_tampered_compiled_module_is_recompiled_and_never_run() {
    use sha2::Digest as _;
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    // `x` answers get_load with {}; `y`, another module, panics in it.
    let (x, y) = (guest("fixture-noop"), guest("fixture-trapper"));
    let sha = |p: &std::path::Path| hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()));
    let config = format!(
        "[returners.x]\nmodule = {}\n[returners.y]\nmodule = {}\n",
        toml_path(&x),
        toml_path(&y)
    );
    let start = || config_daemon(dir.path(), &format!("audit_log = {}", toml_path(&audit_log)), &config);
    let d = start();
    assert_eq!(d.call("x", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    assert_eq!(d.call("y", "get_load", &json!({ "jid": "1" })).error().0, "trap");
    drop(d);

    let compiled = dir.path().join("var/compiled");
    let cached = |sha: &str| {
        std::fs::read_dir(&compiled)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{sha}-")))
            .unwrap_or_else(|| panic!("no compiled file of {sha} in {}", compiled.display()))
    };
    let (x_file, y_file) = (cached(&sha(&x)), cached(&sha(&y)));
    // Someone who could write the cache puts y's compiled code under x's name.
    std::fs::copy(&y_file, &x_file).unwrap();

    let d = start();
    assert_eq!(d.call("x", "get_load", &json!({ "jid": "1" })).result(), &json!({}), "x answers as x: y's code never ran");
    assert_eq!(d.call("y", "get_load", &json!({ "jid": "1" })).error().0, "trap", "y still answers as y");
    assert_ne!(std::fs::read(&x_file).unwrap(), std::fs::read(&y_file).unwrap(), "x's file is x's again");
    let started = std::time::Instant::now();
    let tampered = loop {
        let events = super::hostile::audit_events(&audit_log);
        let found: Vec<serde_json::Value> = events.into_iter().filter(|e| e["fields"]["outcome"] == "tampered").collect();
        if !found.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(tampered.len(), 1, "one audit event, for x only: {tampered:#?}");
    let e = &tampered[0]["fields"];
    assert_eq!((e["capability"].as_str(), e["operation"].as_str()), (Some("module"), Some("cache")), "{e}");
    assert_eq!(e["module_sha256"], sha(&x), "{e}");
    assert_eq!(e["target"], x_file.to_str().unwrap(), "{e}");
    drop(d);

    // Restarted once more, the rewritten file is trusted again: no new event.
    let d = start();
    assert_eq!(d.call("x", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    drop(d);
    let events = super::hostile::audit_events(&audit_log);
    assert_eq!(events.iter().filter(|e| e["fields"]["outcome"] == "tampered").count(), 1);
}

#[test]
fn metrics_declare_every_family_before_the_first_call() {
    // An alert on denials or faults needs a series to match from the start
    // (Prometheus' "avoid missing metrics"); before, /metrics was `# EOF`.
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let m = d.metrics();
    for series in [
        r#"returner_host_denials_total{returner="local_cache",capability="fs"}"#,
        r#"returner_host_guest_faults_total{returner="local_cache",kind="trap"}"#,
        r#"returner_host_limited_total{returner="local_cache",kind="concurrency"}"#,
        r#"returner_host_backend_errors_total{returner="local_cache",capability="mysql"}"#,
        r#"returner_host_calls_total{returner="local_cache",function="returner",outcome="ok"}"#,
        r#"returner_host_calls_in_flight{returner="local_cache"}"#,
        "returner_host_audit_dropped_total",
    ] {
        assert_eq!(m.get(series), Some(&0.0), "{series} in {m:?}");
    }
}
