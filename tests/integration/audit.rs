//! The audit log and the host's logs against a guest that tries to flood or
//! forge them: a call's audit events are capped with one summary, a guest's
//! error text is capped, and nothing a guest writes starts a log line.

use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, good_returner_toml, guest, temp_dir};
use serde_json::{Value, json};

use super::hostile::{GoodTraffic, audit_events};
use super::{config_daemon, toml_path};

/// The cap of audit events per call (`caps::audit::MAX_AUDIT_EVENTS_PER_CALL`).
const CAP: usize = 100;

/// What the abuser guest makes: 100,000 denied etcd reads in one call.
const DENIED_CALLS: u64 = 100_000;

/// A daemon serving `good` beside the abuser as `flood` (no grant at all,
/// long enough a deadline and enough memory for a 50 MB error), with an
/// audit log in `dir/audit.jsonl`.
fn flood_daemon(dir: &Path) -> Daemon {
    config_daemon(
        dir,
        &format!("audit_log = {}", toml_path(&dir.join("audit.jsonl"))),
        &format!(
            "{}\n[returners.flood]\nmodule = {}\nlimits = {{ memory_mib = 512, deadline_ms = 60000 }}\n",
            good_returner_toml(&dir.join("jobs")),
            toml_path(&guest("fixture-abuser"))
        ),
    )
}

/// The audit events of `returner`, once there are `want` of them (the file
/// is written by a thread of its own, so a last line may be half written
/// when read early) and the writer is quiet, to see no more come.
fn settled_events(path: &Path, returner: &str, want: usize) -> Vec<Value> {
    let read = || -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["fields"]["returner"] == returner)
            .collect()
    };
    let started = Instant::now();
    while read().len() < want && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every line parses once the writer is done.
    let all = audit_events(path);
    all.into_iter().filter(|e| e["fields"]["returner"] == returner).collect()
}

#[test]
fn a_flood_of_denials_writes_the_cap_plus_a_summary() {
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    let d = flood_daemon(dir.path());
    let traffic = GoodTraffic::start(d.socket.clone(), "good");

    let r = d.call("flood", "get_jids", &json!({}));
    assert_eq!(r.result(), &json!({ "denied": DENIED_CALLS }), "every read was denied");
    // A second call has a budget of its own.
    assert_eq!(d.call("flood", "get_jids", &json!({})).result(), &json!({ "denied": DENIED_CALLS }));
    assert!(traffic.finish() > 0);

    let events = settled_events(&audit_log, "flood", 2 * (CAP + 1));
    assert_eq!(events.len(), 2 * (CAP + 1), "the cap plus one summary per call, not {DENIED_CALLS} lines");
    let denials = events.iter().filter(|e| e["fields"]["outcome"] == "denied").count();
    assert_eq!(denials, 2 * CAP);
    let summaries: Vec<&Value> = events.iter().filter(|e| e["fields"]["outcome"] == "dropped").collect();
    assert_eq!(summaries.len(), 2, "{summaries:#?}");
    for s in &summaries {
        assert_eq!(s["fields"]["dropped"], json!(DENIED_CALLS - CAP as u64), "{s}");
        assert_eq!(s["fields"]["capability"], "audit", "{s}");
        assert_eq!(s["fields"]["operation"], "get_jids", "{s}");
        assert_eq!(s["fields"]["module_sha256"].as_str().unwrap().len(), 64, "{s}");
    }
    // The summary comes last: after it, nothing more of its call.
    assert_eq!(events[CAP]["fields"]["outcome"], "dropped");

    // Metrics count every denial, and the audit log's queue lost nothing.
    let m = d.metrics();
    assert_eq!(m[r#"returner_host_denials_total{returner="flood",capability="etcd"}"#], 2.0 * DENIED_CALLS as f64);
    assert_eq!(m.get("returner_host_audit_dropped_total").copied(), Some(0.0));
    // The daemon's own log is capped alike.
    let log = d.log_text();
    let logged = log.lines().filter(|l| l.contains("capability denied") && l.contains("flood")).count();
    assert_eq!(logged, 2 * CAP, "denials on stderr");
}

#[test]
fn a_50_mb_guest_error_is_capped_and_forges_no_log_line() {
    let dir = temp_dir();
    let d = flood_daemon(dir.path());

    let r = d.call("flood", "get_endtime", &json!({ "jid": "50" }));
    let (kind, message) = r.error();
    assert_eq!((r.status, kind), (502, "backend"), "{message:.200}");
    assert!(r.body.len() < 8 * 1024, "the answer is {} bytes", r.body.len());
    assert!(message.len() <= 4 * 1024 + 64, "the message is {} bytes", message.len());
    assert!(message.starts_with("forged\\n2026-11-30T00:00:00.000000Z  WARN returner_host::audit"), "{message:.200}");
    assert!(message.ends_with(" bytes cut)"), "{}", &message[message.len() - 60..]);
    assert!(!message.contains('\n'));
    assert!(d.call("good", "get_jid", &json!({ "jid": "1" })).status == 200, "the host serves on");

    // Neither the guest's log record nor its error start a line of their own.
    let log = d.log_text();
    assert!(log.len() < 1024 * 1024, "the daemon log is {} bytes", log.len());
    for line in log.lines() {
        assert!(!line.starts_with("2026-11-30T00:00:00.000000Z"), "a forged line: {line}");
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    let record = log.lines().find(|l| l.contains("returner_host::guest") && l.contains("before")).expect("the guest's record");
    assert!(record.contains("before\\n2026-11-30T00:00:00.000000Z") && record.contains("after"), "{record}");
    let failed = log.lines().find(|l| l.contains("call failed") && l.contains("flood")).expect("the failed call is logged");
    assert!(failed.contains("forged\\n2026-11-30") && failed.contains("bytes cut)"), "{failed:.300}");
    assert!(failed.len() < 8 * 1024, "the log line is {} bytes", failed.len());
}
