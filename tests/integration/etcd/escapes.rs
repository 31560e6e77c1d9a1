//! A hostile guest (`fixture-etcd-escaper`) trying every way out of its etcd
//! grant through the daemon: each escape is `denied` naming the key and the
//! operation, audited exactly once, and nothing is written outside the root.
//! The same guest dumping its config never sees the profile's password.

use std::collections::BTreeMap;

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::{Daemon, good_returner_toml, guest, temp_dir};
use serde_json::{Value, json};

use super::super::hostile::{GoodTraffic, audit_events};
use super::super::{config_daemon, toml_path};

/// Keys around the root that the guest must never read, write or delete.
const OUTSIDE: &[(&str, &str)] = &[
    ("/other", "another tree"),
    ("/salt/retur", "a prefix of the root"),
    ("/salt/return", "the root's own key"),
    ("/salt/return.x", "sorts between root and root/"),
    ("/salt/return0", "the end of the root's range"),
    ("/salt/return2/secret", "a sibling sharing the root's prefix"),
    ("/salt/return2/x", "where ../return2/x would land"),
];

/// Keys that look odd but are inside the root, where the fixture writes
/// them, in the order it does.
const ODD_INSIDE: &[&str] = &["2/x", "%2e%2e/x", "a..b", "...", "x/\u{2028}", "é/ü"];

/// Denials the fixture's `get_jids` must meet: 24 bad keys × 6 single-key
/// operations, 14 bad prefixes × 2 range operations, one bad key among good
/// ones in a `put-many` and in a `put-batches`, and 2 leases over the
/// maximum × 4 writes.
const ESCAPES: usize = 24 * 6 + 14 * 2 + 2 + 2 * 4;

/// The grant's longest lease; the fixture asks for one second more.
const MAX_TTL: u64 = 60;

/// A key as the host shows it in messages and audit events: escaped, cut to 120 characters.
fn shown(key: &str) -> String {
    let mut out: String = key.chars().take(120).flat_map(char::escape_debug).collect();
    if key.chars().count() > 120 {
        out.push_str(&format!("... ({} bytes)", key.len()));
    }
    out
}

/// The daemon: the escaper with every op (`escaper`), read-only
/// (`escaper_ro`) and with no etcd grant (`escaper_nogrant`), on `profile`.
fn escaper_daemon(dir: &std::path::Path, profile: &str, server_extra: &str) -> Daemon {
    let module = toml_path(&guest("fixture-etcd-escaper"));
    let good = good_returner_toml(&dir.join("good"));
    config_daemon(
        dir,
        server_extra,
        &format!(
            r#"
{profile}
[returners.escaper]
module = {module}
options = {{ max_ttl = {MAX_TTL}, ttl = 30 }}
grants.etcd = {{ profile = "main", root = "/salt/return", ops = ["read", "write", "delete"], max_ttl_seconds = {MAX_TTL} }}

[returners.escaper_ro]
module = {module}
grants.etcd = {{ profile = "main", root = "/salt/return/", ops = ["read"] }}

[returners.escaper_nogrant]
module = {module}
{good}"#
        ),
    )
}

/// The fixture's attempts that ended as `outcome`.
fn with_outcome<'a>(attempts: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    attempts.iter().filter(|a| a["outcome"] == outcome).collect()
}

/// The audit events one call writes at most (`caps::audit::MAX_AUDIT_EVENTS_PER_CALL`).
const AUDIT_CAP: usize = 100;

/// `(operation, target)` of each denial as the host names it, in the order
/// the fixture made them.
fn denial_targets(denials: &[&Value]) -> Vec<(String, String)> {
    denials
        .iter()
        .map(|a| {
            let op = a["op"].as_str().unwrap().replace("delete-prefix", "delete");
            (op, shown(a["key"].as_str().unwrap()))
        })
        .collect()
}

/// `(operation, target)` of every etcd audit event of `returner`, in the
/// order they were written.
fn audited(events: &[Value], returner: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["fields"]["returner"] == returner && e["fields"]["capability"] == "etcd")
        .map(|e| {
            assert_eq!(e["fields"]["outcome"], "denied", "{e}");
            let field = |k: &str| e["fields"][k].as_str().unwrap_or_default().to_owned();
            (field("operation"), field("target"))
        })
        .collect()
}

#[test]
fn every_escape_from_an_etcd_grant_is_denied_once_and_writes_nothing_outside() {
    let etcd = EtcdServer::start();
    for (key, value) in OUTSIDE {
        assert!(etcd.ctl(&["put", key, value]).0);
    }
    let seeded: Vec<(String, String)> = OUTSIDE.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let dir = temp_dir();
    let audit_log = dir.path().join("audit.jsonl");
    let mut d = escaper_daemon(dir.path(), &super::etcd_profile_toml("main", &etcd), &format!("audit_log = {}", toml_path(&audit_log)));

    // The control: a well-formed key goes through and lands under the root.
    assert_eq!(d.call("escaper", "get_load", &json!({ "jid": "control/ok" })).result(), &json!({ "read": "inside" }));
    assert_eq!(etcd.dump("/salt/return/control/"), [("/salt/return/control/ok".to_owned(), "inside".to_owned())]);

    let traffic = GoodTraffic::start(d.socket.clone(), "good");
    let answer = d.call("escaper", "get_jids", &json!({}));
    let attempts = answer.result().as_array().unwrap().clone();
    let denials = with_outcome(&attempts, "denied");
    assert_eq!(denials.len(), ESCAPES, "every escape is denied: {attempts:#?}");
    for a in &denials {
        let (op, key, message) = (a["op"].as_str().unwrap(), a["key"].as_str().unwrap(), a["message"].as_str().unwrap());
        let op = op.replace("delete-prefix", "delete");
        assert!(
            message.starts_with(&format!("etcd {op} of key `{}", shown(key))) && message.contains("returner `escaper`"),
            "the denial names the operation, the key and the returner: {message}"
        );
    }
    // What was not denied is exactly what the grant allows, and stayed inside.
    let allowed: Vec<&Value> = attempts.iter().filter(|a| a["outcome"] != "denied").collect();
    let summary: Vec<(String, String, String)> = allowed
        .iter()
        .map(|a| (a["op"].as_str().unwrap().into(), a["key"].as_str().unwrap().into(), a["outcome"].as_str().unwrap().into()))
        .collect();
    let mut expected: Vec<(String, String, String)> =
        ODD_INSIDE.iter().map(|k| ("put".into(), k.to_string(), "ok".into())).collect();
    expected.push(("put".into(), "ttl/at-max".into(), "ok".into()));
    expected.push(("put".into(), "ttl/zero".into(), "invalid".into()));
    expected.push(("get-prefix".into(), "".into(), "ok".into()));
    expected.push(("get-prefix".into(), "2".into(), "ok".into()));
    assert_eq!(summary, expected, "{allowed:#?}");
    let mut inside: Vec<String> = ODD_INSIDE.iter().map(|k| k.to_string()).collect();
    inside.extend(["control/ok".to_owned(), "ttl/at-max".to_owned()]);
    inside.sort();
    let listed = |key: &str| allowed.iter().find(|a| a["op"] == "get-prefix" && a["key"] == key).unwrap()["value"].clone();
    assert_eq!(listed(""), json!(inside), "a read of the whole root sees only the root");
    assert_eq!(listed("2"), json!(["2/x"]), "`2` under the root is not `/salt/return2`");

    // In etcd: the odd keys landed under the root, nothing else moved.
    let mut expected_keys: BTreeMap<String, String> = seeded.iter().cloned().collect();
    for key in &inside {
        expected_keys.insert(format!("/salt/return/{key}"), "inside".into());
    }
    assert_eq!(etcd.dump(""), expected_keys.into_iter().collect::<Vec<_>>(), "the whole keyspace");
    let at_max = etcd.leases("/salt/return/ttl/at-max")[0];
    assert_eq!(etcd.lease_keys(&format!("{at_max:x}")).0, MAX_TTL as i64, "a lease of exactly the maximum is granted");

    // Read-only: every write and delete denied, the read allowed.
    let ro = d.call("escaper_ro", "get_fun", &json!({ "fun": "writes" }));
    let ro = ro.result().as_array().unwrap().clone();
    assert_eq!((ro[0]["op"].as_str(), ro[0]["outcome"].as_str()), (Some("get"), Some("ok")), "{ro:#?}");
    let ro_denials = with_outcome(&ro, "denied");
    assert_eq!(ro_denials.len(), 6, "{ro:#?}");
    for a in &ro_denials {
        let why = if a["op"].as_str().unwrap().starts_with("delete") { "delete" } else { "write" };
        assert!(a["message"].as_str().unwrap().contains(&format!("the grant does not include `{why}`")), "{a}");
    }

    // No etcd grant at all: every operation denied.
    let none = d.call("escaper_nogrant", "get_fun", &json!({ "fun": "every-op" }));
    let none = none.result().as_array().unwrap().clone();
    let none_denials = with_outcome(&none, "denied");
    assert_eq!(none_denials.len(), 8, "{none:#?}");
    assert!(none_denials.iter().all(|a| a["message"].as_str().unwrap().contains("it has no etcd grant")), "{none:#?}");

    // The allowed range deletes stay inside: afterwards only what was outside is left.
    d.call("escaper", "clean_old_jobs", &json!({})).result();
    assert_eq!(etcd.dump(""), seeded, "the root is empty and everything outside untouched");
    traffic.finish();
    assert!(d.is_running(), "the host is up");

    // One audit event per denial, naming the same operation and key, in order; none for
    // the invalid TTL. The escapes of one call are more than a call may write: the
    // first ones, then one summary of the rest.
    let events = audit_events(&audit_log);
    assert_eq!(audited(&events, "escaper"), denial_targets(&denials)[..AUDIT_CAP]);
    let dropped: Vec<&Value> = events.iter().filter(|e| e["fields"]["outcome"] == "dropped").collect();
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    assert_eq!(dropped[0]["fields"]["returner"], "escaper");
    assert_eq!(dropped[0]["fields"]["dropped"], json!(ESCAPES - AUDIT_CAP));
    assert_eq!(audited(&events, "escaper_ro"), denial_targets(&ro_denials));
    assert_eq!(audited(&events, "escaper_nogrant"), denial_targets(&none_denials));
    assert_eq!(events.len(), AUDIT_CAP + 1 + 6 + 8, "no other audit event: {events:#?}");
    let m = d.metrics();
    for (returner, n) in [("escaper", ESCAPES), ("escaper_ro", 6), ("escaper_nogrant", 8)] {
        let series = format!(r#"returner_host_denials_total{{returner="{returner}",capability="etcd"}}"#);
        assert_eq!(m.get(&series).copied(), Some(n as f64), "{series}");
    }
    // No raw control character from a key reached a log line.
    let log = d.log_text();
    assert!(!log.contains('\0') && !log.contains('\x1b') && !log.contains('\x7f'), "a raw control character in the log");
}

#[test]
fn a_guest_dumping_its_config_never_sees_the_etcd_password() {
    let mut etcd = EtcdServer::start();
    let password = "pw-of-etcd-0f8e2c1d";
    etcd.enable_auth(password);
    let dir = temp_dir();
    std::fs::write(dir.path().join("etcd.pass"), format!("{password}\n")).unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let profile = format!(
        "[profiles.main]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nusername = \"root\"\npassword_file = \"etcd.pass\"\n",
        etcd.endpoint()
    );
    let d = escaper_daemon(dir.path(), &profile, &format!("audit_log = {}", toml_path(&audit_log)));

    // Authenticated: the control write lands.
    assert_eq!(d.call("escaper", "get_load", &json!({ "jid": "control/ok" })).result(), &json!({ "read": "inside" }));
    assert_eq!(etcd.dump("/salt/return/control/"), [("/salt/return/control/ok".to_owned(), "inside".to_owned())]);

    let config = d.call("escaper", "get_fun", &json!({ "fun": "config" }));
    let config = config.result();
    assert_eq!(config["all"], json!({ "max_ttl": MAX_TTL, "ttl": 30 }), "the guest sees its options and nothing else");
    let probes = config["probes"].as_object().unwrap();
    for (key, value) in probes {
        let expected = config["all"].get(key).cloned().unwrap_or(Value::Null);
        assert_eq!(value, &expected, "config `{key}`");
    }
    // Denials (audited) with the password profile in use.
    assert_eq!(with_outcome(d.call("escaper_ro", "get_fun", &json!({ "fun": "writes" })).result().as_array().unwrap(), "denied").len(), 6);

    assert!(!config.to_string().contains(password), "the password reached the guest: {config}");
    let audit = returner_host_tests::settled_audit_log(&audit_log);
    assert_eq!(audit.lines().count(), 6, "{audit}");
    assert!(!audit.contains(password), "the password reached the audit log");
    assert!(!d.log_text().contains(password), "the password reached the daemon log");
}
