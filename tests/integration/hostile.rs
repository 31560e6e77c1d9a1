//! Hostile guests served beside a good returner by the same daemon: a loop,
//! memory growth past the cap, a trap and a panic, deep recursion, a 100 MB
//! answer, a flood of host calls, every capability without a grant, and
//! filesystem escapes. Each call fails as it should within its deadline, is
//! audited and counted; the good returner's calls all succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, guest, hostile_suite_toml, temp_dir};
use serde_json::{Value, json};

use super::{config_daemon, toml_path};

/// Calls of a well-behaved local-cache returner in a loop until stopped:
/// each stores a return and reads it back; counts failures.
pub(crate) struct GoodTraffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodTraffic {
    pub(crate) fn start(socket: std::path::PathBuf, returner: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let jid = format!("2026112312{n:010}");
                let ret = json!({ "id": returner, "jid": jid, "fun": "test.ping", "return": true, "retcode": 0, "success": true });
                let r = returner_host_tests::http_unix(
                    &socket,
                    "POST",
                    &format!("/v1/returners/{returner}/returner"),
                    &[],
                    json!({ "ret": ret }).to_string().as_bytes(),
                );
                let back = returner_host_tests::http_unix(
                    &socket,
                    "POST",
                    &format!("/v1/returners/{returner}/get_jid"),
                    &[],
                    json!({ "jid": jid }).to_string().as_bytes(),
                );
                if r.status == 200 && back.status == 200 && back.json["result"][returner]["return"] == json!(true) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.lock().unwrap().push(format!("{:?} / {:?}", r.json, back.json));
                }
            }
        });
        Self { stop, ok, failed, thread: Some(thread) }
    }

    /// Stop and assert every call succeeded; the number of round trips.
    pub(crate) fn finish(mut self) -> usize {
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
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::write(dir.join("outside.txt"), "TOP SECRET outside").unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP SECRET behind a symlink").unwrap();
    std::fs::write(granted.join("inside.txt"), "inside, granted").unwrap();
    std::os::unix::fs::symlink(dir, granted.join("link-out")).unwrap();
    config_daemon(
        dir,
        server_extra,
        &format!(
            "{}\n[returners.escaper]\nmodule = {}\n[returners.escaper.grants.fs]\ndir = {}\nmode = \"rw\"\n",
            hostile_suite_toml(&jobs),
            toml_path(&guest("fixture-escaper")),
            toml_path(&granted),
        ),
    )
}

fn ret(id: &str) -> Value {
    json!({ "ret": { "id": id, "jid": "20261123120000000001", "fun": "test.ping", "return": true } })
}

/// One hostile call and what it must get.
struct Case {
    returner: &'static str,
    function: &'static str,
    args: Value,
    status: u16,
    kind: &'static str,
    says: &'static str,
    /// The returner's deadline: the call must end within it plus a margin.
    deadline_ms: u64,
}

fn hostile_cases() -> Vec<Case> {
    let case = |returner, function, args, status, kind, says, deadline_ms| Case {
        returner,
        function,
        args,
        status,
        kind,
        says,
        deadline_ms,
    };
    vec![
        case("spin", "returner", ret("m1"), 504, "deadline", "deadline of 300 ms", 300),
        case("spin", "get_load", json!({ "jid": "1" }), 504, "deadline", "deadline of 300 ms", 300),
        case("memhog", "returner", ret("m1"), 507, "memory_limit", "memory cap of 32 MiB", 20_000),
        case("trapper", "returner", ret("m1"), 500, "trap", "trapped in returner", 2_000),
        case("trapper", "get_load", json!({ "jid": "1" }), 500, "trap", "panics on purpose", 2_000),
        case("abuser", "get_load", json!({ "jid": "deep" }), 500, "trap", "trapped in get_load", 2_000),
        case("abuser", "get_jid", json!({ "jid": "100" }), 429, "limit", "over its max_result_mib of 16 MiB", 2_000),
        case("abuser", "get_fun", json!({ "fun": "flood" }), 504, "deadline", "deadline of 2000 ms", 2_000),
    ]
}

/// How much later than its deadline a call may end: process start-up and
/// scheduling on a busy machine, not guest time.
const MARGIN: Duration = Duration::from_millis(1_500);

pub(crate) fn audit_events(path: &std::path::Path) -> Vec<Value> {
    returner_host_tests::settled_audit_log(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn hostile_guests_fail_alone_audited_and_counted() {
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    let mut d = hostile_daemon(dir.path(), &format!("audit_log = {}", toml_path(&audit_log)));
    let traffic = GoodTraffic::start(d.socket.clone(), "good");

    let cases = hostile_cases();
    for c in &cases {
        let started = Instant::now();
        let r = d.outcome(c.returner, c.function, &c.args);
        let took = started.elapsed();
        let what = format!("{}.{}", c.returner, c.function);
        assert_eq!((r.status, r.error().0), (c.status, c.kind), "{what}: {:?}", r.json);
        assert!(r.error().1.contains(c.says), "{what} should say `{}`: {:?}", c.says, r.json);
        assert!(
            took < Duration::from_millis(c.deadline_ms) + MARGIN,
            "{what} took {took:?}, past its {} ms deadline",
            c.deadline_ms
        );
        assert!(d.is_running(), "the host is up after {what}");
    }
    // A returner with no grant at all tries every capability.
    let r = d.call("nogrant", "get_minions", &json!({}));
    let denials = r.result().as_array().unwrap();
    assert_eq!(denials.len(), 2, "{denials:?}");
    assert!(denials.iter().all(|m| m.as_str().unwrap().contains("denied")), "{denials:?}");
    let r = d.call("nogrant", "get_jid", &json!({ "jid": "/data/inside.txt" }));
    assert_ne!(r.status, 200, "no filesystem without a grant: {:?}", r.json);
    // Each hostile returner serves its next call afresh (no state leaks).
    assert_eq!(d.write("spin", "returner", &ret("m1")).error().0, "deadline");

    let good_calls = traffic.finish();
    assert!(d.is_running(), "the host is still up");

    // One audit event per fault and per denial, with the module's sha256 and the call's span.
    let events = audit_events(&audit_log);
    assert!(events.iter().all(|e| e["target"] == "returner_host::audit"), "only audit events in the audit log");
    let mut expected: std::collections::HashMap<(&str, &str, &str), usize> = Default::default();
    for c in &cases {
        *expected.entry((c.returner, c.function, c.kind)).or_default() += 1;
    }
    *expected.entry(("spin", "returner", "deadline")).or_default() += 1;
    for ((returner, function, kind), n) in &expected {
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["fields"]["returner"] == *returner && e["fields"]["operation"] == *function && e["fields"]["outcome"] == *kind
            })
            .collect();
        assert_eq!(found.len(), *n, "audit events of {returner}.{function} {kind} in {events:#?}");
        assert_eq!(found[0]["fields"]["module_sha256"].as_str().unwrap().len(), 64, "{}", found[0]);
    }
    for capability in ["etcd", "mysql"] {
        let e = events
            .iter()
            .find(|e| e["fields"]["returner"] == "nogrant" && e["fields"]["capability"] == capability)
            .unwrap_or_else(|| panic!("no {capability} denial in {events:#?}"));
        assert_eq!(e["fields"]["outcome"], "denied");
        assert_eq!(e["span"]["name"], "call", "the call's span rides along: {e}");
        assert_eq!(e["span"]["returner"], "nogrant");
        assert_eq!(e["span"]["module_sha256"].as_str().unwrap().len(), 64, "{e}");
    }
    assert!(!events.iter().any(|e| e["fields"]["returner"] == "good"), "the good returner did nothing to audit");

    // The counters moved by exactly what happened.
    let m = d.metrics();
    let get = |series: &str| *m.get(series).unwrap_or_else(|| panic!("no series {series} in {m:#?}"));
    let mut faults: std::collections::HashMap<(&str, &str), f64> = Default::default();
    for ((returner, _, kind), n) in &expected {
        *faults.entry((returner, kind)).or_default() += *n as f64;
    }
    for ((returner, kind), n) in faults {
        assert_eq!(get(&format!(r#"returner_host_guest_faults_total{{returner="{returner}",kind="{kind}"}}"#)), n);
    }
    assert_eq!(get(r#"returner_host_denials_total{returner="nogrant",capability="etcd"}"#), 1.0);
    assert_eq!(get(r#"returner_host_denials_total{returner="nogrant",capability="mysql"}"#), 1.0);
    assert_eq!(get(r#"returner_host_calls_total{returner="spin",function="returner",outcome="deadline"}"#), 2.0);
    assert_eq!(get(r#"returner_host_calls_total{returner="abuser",function="get_jid",outcome="limit"}"#), 1.0);
    assert_eq!(get(r#"returner_host_calls_total{returner="good",function="returner",outcome="ok"}"#), good_calls as f64);
    assert_eq!(get(r#"returner_host_calls_total{returner="good",function="get_jid",outcome="ok"}"#), good_calls as f64);
    assert_eq!(get(r#"returner_host_call_duration_seconds_count{returner="good",function="get_jid"}"#), good_calls as f64);
    assert_eq!(get(r#"returner_host_calls_in_flight{returner="good"}"#), 0.0);
    assert_eq!(get(r#"returner_host_calls_in_flight{returner="abuser"}"#), 0.0);
    assert!(!m.iter().any(|(k, n)| k.contains(r#"returner="good""#) && k.contains("outcome=") && !k.contains(r#"outcome="ok""#) && *n > 0.0));

    // The flood of host calls was cut at the log cap, not written out in full.
    let log = d.log_text();
    assert!(log.contains("host call 1000 "), "the first 1,000 records are logged");
    assert!(!log.contains("host call 1001 "), "records past the cap are dropped");
    assert!(log.contains("more than 1000 log records in one call"), "the cap is reported once");
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
        let r = d.write("escaper", "returner", &json!({ "ret": { "id": target, "jid": "1", "return": "x" } }));
        assert_ne!(r.status, 200, "{target} was written");
    }
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/returner-host-escaped.txt").exists());

    // No environment.
    assert_eq!(d.call("escaper", "get_fun", &json!({ "fun": "HOME" })).result(), &json!({ "value": null }));
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

#[test]
fn good_calls_succeed_while_hostile_guests_compute_on_every_core() {
    let dir = temp_dir();
    let d = hostile_daemon(dir.path(), "");
    let traffic = GoodTraffic::start(d.socket.clone(), "good");
    // Twice as many computing guests as cores, each until its deadline.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hostile: Vec<_> = (0..cores * 2)
        .map(|i| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut conn = returner_host_tests::HttpConn::connect(&socket);
                for _ in 0..2 {
                    let (path, args) = if i % 2 == 0 {
                        ("/v1/returners/abuser/get_fun", json!({ "fun": "flood" }))
                    } else {
                        ("/v1/returners/spin/get_load", json!({ "jid": "1" }))
                    };
                    let r = conn.post(path, args.to_string().as_bytes());
                    assert_eq!(r.error().0, "deadline", "{path}: {:?}", r.json);
                }
            })
        })
        .collect();
    for h in hostile {
        h.join().unwrap();
    }
    // Every good call beside them succeeded within its 2 s deadline.
    assert!(traffic.finish() > 0);
}
