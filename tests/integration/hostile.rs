//! Hostile guests served beside a good returner by the same daemon: a loop,
//! memory growth past the cap, a trap and a panic, and filesystem escapes.
//! Each call fails as it should; the good returner's calls all succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, guest, temp_dir};
use serde_json::{Value, json};

use super::{config_daemon, toml_path};

/// Calls of the good returner in a loop until stopped; counts failures.
struct GoodTraffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodTraffic {
    fn start(socket: std::path::PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let jid = format!("2026112312{n:010}");
                let ret = json!({ "id": "good", "jid": jid, "fun": "test.ping", "return": true, "retcode": 0, "success": true });
                let r = returner_host_tests::http_unix(
                    &socket,
                    "POST",
                    "/v1/returners/good/returner",
                    &[],
                    json!({ "ret": ret }).to_string().as_bytes(),
                );
                let back = returner_host_tests::http_unix(
                    &socket,
                    "POST",
                    "/v1/returners/good/get_jid",
                    &[],
                    json!({ "jid": jid }).to_string().as_bytes(),
                );
                if r.status == 200 && back.status == 200 && back.json["result"]["good"]["return"] == json!(true) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.lock().unwrap().push(format!("{:?} / {:?}", r.json, back.json));
                }
            }
        });
        Self { stop, ok, failed, thread: Some(thread) }
    }

    /// Stop and assert every good call succeeded.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let failed = self.failed.lock().unwrap();
        assert!(failed.is_empty(), "good calls failed beside the hostile ones: {failed:?}");
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(ok > 0, "no good call completed");
        ok
    }
}

fn hostile_daemon(dir: &std::path::Path, server_extra: &str) -> Daemon {
    let jobs = dir.join("jobs");
    let granted = dir.join("granted");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::write(dir.join("outside.txt"), "TOP SECRET outside").unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP SECRET behind a symlink").unwrap();
    std::fs::write(granted.join("inside.txt"), "inside, granted").unwrap();
    std::os::unix::fs::symlink(dir, granted.join("link-out")).unwrap();
    let module = |name: &str| toml_path(&guest(name));
    config_daemon(
        dir,
        server_extra,
        &format!(
            r#"
[returners.good]
module = "builtin:local-cache"
[returners.good.grants.fs]
dir = {jobs}
mode = "rw"

[returners.spin]
module = {spin}
limits = {{ deadline_ms = 300 }}

[returners.memhog]
module = {memhog}
limits = {{ memory_mib = 32, deadline_ms = 20000 }}

[returners.trapper]
module = {trapper}

[returners.escaper]
module = {escaper}
[returners.escaper.grants.fs]
dir = {granted}
mode = "rw"
"#,
            jobs = toml_path(&jobs),
            granted = toml_path(&granted),
            spin = module("fixture-spin"),
            memhog = module("fixture-memhog"),
            trapper = module("fixture-trapper"),
            escaper = module("fixture-escaper"),
        ),
    )
}

fn ret(id: &str) -> Value {
    json!({ "ret": { "id": id, "jid": "20261123120000000001", "fun": "test.ping", "return": true } })
}

#[test]
fn hostile_guests_fail_alone() {
    let dir = temp_dir();
    let mut d = hostile_daemon(dir.path(), "");
    let traffic = GoodTraffic::start(d.socket.clone());

    // An endless loop ends at its 300 ms deadline.
    for function in ["returner", "get_load"] {
        let started = Instant::now();
        let args = if function == "returner" { ret("m1") } else { json!({ "jid": "1" }) };
        let r = d.call("spin", function, &args);
        let took = started.elapsed();
        assert_eq!(r.status, 504, "{:?}", r.json);
        assert_eq!(r.error().0, "deadline");
        assert!(r.error().1.contains("deadline of 300 ms"), "{:?}", r.json);
        assert!(took < Duration::from_secs(10), "the loop was stopped ({took:?})");
    }

    // Growing memory past the cap.
    let r = d.call("memhog", "returner", &ret("m1"));
    assert_eq!(r.status, 507, "{:?}", r.json);
    assert_eq!(r.error().0, "memory_limit");
    assert!(r.error().1.contains("memory cap of 32 MiB"), "{:?}", r.json);

    // A trap, and a panic whose message is quoted.
    let r = d.call("trapper", "returner", &ret("m1"));
    assert_eq!((r.status, r.error().0), (500, "trap"), "{:?}", r.json);
    let r = d.call("trapper", "get_load", &json!({ "jid": "1" }));
    assert_eq!((r.status, r.error().0), (500, "trap"), "{:?}", r.json);
    assert!(r.error().1.contains("panicked"), "{:?}", r.json);

    // Each hostile returner serves its next call afresh (no state leaks).
    let r = d.call("spin", "returner", &ret("m1"));
    assert_eq!(r.error().0, "deadline");

    let good_calls = traffic.finish();
    assert!(d.is_running(), "the host is still up");
    assert!(good_calls > 0);
}

#[test]
fn filesystem_escapes_are_refused() {
    let dir = temp_dir();
    let d = hostile_daemon(dir.path(), "");

    // The control: the guest can read inside its granted directory.
    let inside = d.call("escaper", "get_jid", &json!({ "jid": "/data/inside.txt" }));
    assert_eq!(inside.result(), &json!({ "read": true, "content": "inside, granted" }));

    for path in ["/data/../outside.txt", "../outside.txt", "/etc/passwd", "/data/link-out/secret.txt", "/data/link-out/outside.txt"] {
        let r = d.call("escaper", "get_jid", &json!({ "jid": path }));
        assert_ne!(r.status, 200, "{path} was read: {:?}", r.json);
        assert!(!String::from_utf8_lossy(&r.body).contains("TOP SECRET"), "{path} leaked");
        assert!(
            ["denied", "guest_not_found", "backend", "invalid"].contains(&r.error().0),
            "{path}: {:?}",
            r.json
        );
    }

    for target in ["/data/../escaped.txt", "/tmp/returner-host-escaped.txt", "/data/link-out/escaped.txt"] {
        let r = d.call("escaper", "returner", &json!({ "ret": { "id": target, "jid": "1", "return": "x" } }));
        assert_ne!(r.status, 200, "{target} was written");
    }
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/returner-host-escaped.txt").exists());

    // No environment, and no etcd or MySQL without a grant.
    assert_eq!(d.call("escaper", "get_fun", &json!({ "fun": "HOME" })).result(), &json!({ "value": null }));
    let denials = d.call("escaper", "get_minions", &json!({}));
    let denials = denials.result().as_array().unwrap();
    assert_eq!(denials.len(), 2, "{denials:?}");
    for message in denials {
        assert!(message.as_str().unwrap().contains("denied"), "{message}");
    }
    // Every denial is audited.
    let log = d.log_text();
    assert!(log.contains("returner_host::audit") && log.contains("capability=\"etcd\""), "{log}");
    assert!(log.contains("capability=\"mysql\""), "{log}");
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn faults_and_denials_are_audited_and_counted() {
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    let d = hostile_daemon(dir.path(), &format!("audit_log = {}", toml_path(&audit_log)));

    assert_eq!(d.call("spin", "returner", &ret("m1")).error().0, "deadline");
    assert_eq!(d.call("memhog", "returner", &ret("m1")).error().0, "memory_limit");
    assert_eq!(d.call("trapper", "returner", &ret("m1")).error().0, "trap");
    assert_eq!(d.call("escaper", "get_minions", &json!({})).status, 200);
    assert_eq!(d.call("good", "get_load", &json!({ "jid": "1" })).status, 200);

    let events: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect();
    let find = |returner: &str, outcome: &str| {
        events
            .iter()
            .find(|e| e["fields"]["returner"] == returner && e["fields"]["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no `{outcome}` audit event for {returner} in {events:#?}"))
    };
    for (returner, outcome) in [("spin", "deadline"), ("memhog", "memory_limit"), ("trapper", "trap")] {
        let e = find(returner, outcome);
        assert_eq!(e["target"], "returner_host::audit");
        assert_eq!(e["fields"]["module_sha256"].as_str().unwrap().len(), 64, "{e}");
        assert_eq!(e["fields"]["operation"], "returner");
    }
    for capability in ["etcd", "mysql"] {
        let e = events
            .iter()
            .find(|e| e["fields"]["returner"] == "escaper" && e["fields"]["capability"] == capability)
            .unwrap_or_else(|| panic!("no {capability} denial in {events:#?}"));
        assert_eq!(e["fields"]["outcome"], "denied");
        assert_eq!(e["span"]["name"], "call", "the call's span rides along: {e}");
        assert_eq!(e["span"]["returner"], "escaper");
        assert_eq!(e["span"]["module_sha256"].as_str().unwrap().len(), 64, "{e}");
    }
    assert!(events.iter().all(|e| e["target"] == "returner_host::audit"), "only audit events in the audit log");

    let metrics = returner_host_tests::http_unix(&d.socket, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let m = parse_metrics(&String::from_utf8_lossy(&metrics.body));
    let get = |series: &str| *m.get(series).unwrap_or_else(|| panic!("no series {series} in {m:#?}"));
    assert_eq!(get(r#"returner_host_guest_faults_total{returner="spin",kind="deadline"}"#), 1.0);
    assert_eq!(get(r#"returner_host_guest_faults_total{returner="memhog",kind="memory_limit"}"#), 1.0);
    assert_eq!(get(r#"returner_host_guest_faults_total{returner="trapper",kind="trap"}"#), 1.0);
    assert_eq!(get(r#"returner_host_denials_total{returner="escaper",capability="etcd"}"#), 1.0);
    assert_eq!(get(r#"returner_host_calls_total{returner="good",function="get_load",outcome="ok"}"#), 1.0);
    assert_eq!(get(r#"returner_host_calls_total{returner="spin",function="returner",outcome="deadline"}"#), 1.0);
    assert_eq!(get(r#"returner_host_calls_in_flight{returner="good"}"#), 0.0);
    assert_eq!(get(r#"returner_host_call_duration_seconds_count{returner="good",function="get_load"}"#), 1.0);
}

#[test]
fn a_returner_over_its_rate_gets_a_limit_error() {
    let dir = temp_dir();
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            "[returners.noop]\nmodule = {}\nlimits = {{ rate_per_second = 0.5, burst = 2 }}\n",
            toml_path(&guest("fixture-noop"))
        ),
    );
    for _ in 0..2 {
        assert_eq!(d.call("noop", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    }
    let r = d.call("noop", "get_load", &json!({ "jid": "1" }));
    assert_eq!((r.status, r.error().0), (429, "limit"), "{:?}", r.json);
    assert!(r.error().1.contains("rate limit of 0.5 calls/s (burst 2)"), "{:?}", r.json);
}
