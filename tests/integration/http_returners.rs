//! The shipped HTTP returners through the daemon against a real TLS server
//! on loopback: `splunk` sends what saltext-splunk sends for the real Salt
//! fixtures (the Python module run on the same fixtures against the same
//! server, as the mysql compatibility tests do), and `webhook` holds its
//! returns in the spool while the endpoint is down, retries a 5xx, and
//! dead-letters what the endpoint refuses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use returner_host_tests::http::{HttpServer, Received, Reply, TestCa};
use returner_host_tests::{guest, salt_fixture_lines, salt_fixtures, temp_dir};
use serde_json::{Value, json};

use super::http::{TOKEN, http_profile_toml};
use super::{config_daemon, toml_path};

/// The harness that runs saltext's returners on stdin lines.
fn harness() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/salt-http/run_returner.py")
}

/// Run saltext's `returner` module on `lines` against `url`, with the
/// clock and host name pinned; panics with its stderr when it fails.
pub(crate) fn run_saltext(returner: &str, url: &str, ca: &TestCa, options: &[&str], lines: &[Value]) {
    let python = returner_host_tests::salt::venv().join("bin/python");
    assert!(python.is_file(), "no Salt 3008 venv at {}: run scripts/setup", python.display());
    let mut cmd = Command::new(&python);
    cmd.arg(harness()).args([returner, "--url", url, "--ca-file", ca.ca_file.to_str().unwrap()]);
    cmd.args(["--pin-time", "1795423380.320186", "--pin-host", "minion-host", "--pin-uuid"]);
    for o in options {
        cmd.args(["--option", o]);
    }
    cmd.env("SPLUNK_TOKEN", TOKEN).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "saltext {returner} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `body` with its splunk `"time": "<digits>"` replaced by `"time": "T"`,
/// and the seconds it held.
fn without_time(body: &[u8]) -> (String, u64) {
    let text = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    let rest = text.strip_prefix("{\"time\": \"").unwrap_or_else(|| panic!("a HEC event starts with its time: {text}"));
    let (digits, after) = rest.split_once('"').unwrap();
    (format!("{{\"time\": \"T\"{after}"), digits.parse().unwrap_or_else(|_| panic!("time `{digits}` is not seconds")))
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The event_return calls of the recorded master's traffic.
fn event_calls() -> Vec<Value> {
    salt_fixture_lines("master-job-cache-calls.jsonl").into_iter().filter(|c| c["call"] == "event_return").take(5).collect()
}

#[test]
fn splunk_sends_what_saltext_splunk_sends_for_the_real_fixtures() {
    assert!(salt_fixtures().join("minion-returns.jsonl").is_file());
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let server = HttpServer::start(Some(&ca));
    let returns = salt_fixture_lines("minion-returns.jsonl");
    let events = event_calls();
    assert!(!events.is_empty());

    // saltext-splunk itself.
    let mut python_input = returns.clone();
    python_input.extend(events.iter().cloned());
    run_saltext("splunk", &server.url(), &ca, &["index=\"main\"", "sourcetype=\"_json\""], &python_input);
    let salt: Vec<Received> = server.received();
    server.clear();
    let salt_events: usize = events.iter().map(|c| c["events"].as_array().unwrap().len()).sum();
    assert_eq!(salt.len(), returns.len() + salt_events, "saltext-splunk posts once per return and per event");

    // The sandboxed returner, through the daemon and its spool.
    let profile = http_profile_toml(dir.path(), "splunk", &server, &ca, "");
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            "{profile}\n[returners.splunk]\nmodule = {}\noptions = {{ index = \"main\", sourcetype = \"_json\", host = \"minion-host\" }}\ngrants.http = {{ profile = \"splunk\", methods = [\"POST\"], paths = [\"/services/collector/event\"] }}\n",
            toml_path(&guest("returner-splunk"))
        ),
    );
    let before = now_seconds();
    for ret in &returns {
        d.write("splunk", "returner", &json!({ "ret": ret })).result();
    }
    for call in &events {
        d.write("splunk", "event_return", &json!({ "events": call["events"] })).result();
    }
    let after = now_seconds();
    let ours = server.received();
    assert_eq!(ours.len(), salt.len(), "{ours:#?}");

    for (i, (s, o)) in salt.iter().zip(&ours).enumerate() {
        assert_eq!((o.method.as_str(), o.target.as_str()), (s.method.as_str(), s.target.as_str()), "request {i}");
        assert_eq!(o.header("authorization"), s.header("authorization"), "request {i}: the token the host added");
        assert_eq!(o.header("authorization"), Some(format!("Splunk {TOKEN}").as_str()));
        assert_eq!(o.header("content-type"), s.header("content-type"), "request {i}: saltext-splunk sends none");
        let (salt_body, pinned) = without_time(&s.body);
        let (our_body, sent_at) = without_time(&o.body);
        assert_eq!(pinned, 1795423380);
        assert!((before..=after).contains(&sent_at), "request {i}: time {sent_at} is the time it was sent");
        assert_eq!(our_body, salt_body, "request {i}: byte for byte but the time");
    }
}

#[test]
fn webhook_returns_wait_in_the_spool_while_the_endpoint_is_down_and_poison_goes_to_dead_letters() {
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let mut server = HttpServer::start(Some(&ca));
    // A Slack-style webhook: the URL is the credential, kept in a file.
    let secret_path = "/hooks/T0001/B0001/Xq7v9s3cretpath";
    let url_file = dir.path().join("hook.url");
    std::fs::write(&url_file, format!("{}{secret_path}\n", server.url())).unwrap();
    let config = format!(
        r#"
[profiles.hook]
kind = "http"
base_url = {{ file = {} }}
ca_file = {}
timeout_ms = 2000

[returners.hook]
module = {}
options = {{ text = "{{id}} ran {{fun}} ({{jid}}): {{outcome}}" }}
grants.http = {{ profile = "hook", methods = ["POST"], paths = [""] }}
"#,
        toml_path(&url_file),
        toml_path(&ca.ca_file),
        toml_path(&guest("returner-webhook"))
    );
    let d = config_daemon(dir.path(), "[server.spool]\nretry_max_ms = 500", &config);
    let jid = |n: u64| format!("2026113012{n:010}");
    let ret = |n: u64, fun: &str| json!({ "id": format!("m{n}"), "jid": jid(n), "fun": fun, "return": true, "retcode": 0, "success": true });

    // Down: the returns are acknowledged (spooled), nothing is lost.
    server.stop();
    for n in 0..20 {
        d.call("hook", "returner", &json!({ "ret": ret(n, "test.ping") })).result();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.queue("hook")["items"].as_u64().unwrap() > 0, "held while the endpoint is down: {}", d.queue("hook"));
    let log = d.log_text();
    assert!(!log.contains("Xq7v9s3cretpath"), "the secret URL is not logged:\n{log}");

    // Back: every return delivered, once each, in order.
    server.resume();
    d.settle("hook", Duration::from_secs(60));
    let texts: Vec<String> = server.received().iter().map(|r| r.json()["text"].as_str().unwrap().to_owned()).collect();
    let want: Vec<String> = (0..20).map(|n| format!("m{n} ran test.ping ({}): succeeded", jid(n))).collect();
    assert_eq!(texts, want);
    assert!(server.received().iter().all(|r| r.target == secret_path && r.header("content-type") == Some("application/json")));
    server.clear();

    // A 503 is retried until it passes; a 400 is the endpoint refusing: a dead letter.
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = failures.clone();
    server.answer(move |r: &Received| {
        let text = r.json()["text"].as_str().unwrap_or_default().to_owned();
        if text.contains("poison.fun") {
            Reply::Status(400, vec![], b"invalid_payload".to_vec())
        } else if f.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
            Reply::Status(503, vec![], b"busy".to_vec())
        } else {
            Reply::Status(200, vec![], b"ok".to_vec())
        }
    });
    d.call("hook", "returner", &json!({ "ret": ret(100, "test.ping") })).result();
    d.call("hook", "returner", &json!({ "ret": ret(101, "poison.fun") })).result();
    d.call("hook", "returner", &json!({ "ret": ret(102, "test.ping") })).result();
    d.settle("hook", Duration::from_secs(60));
    let statuses: Vec<String> = server.received().iter().map(|r| r.json()["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(statuses.iter().filter(|t| t.contains(&jid(100))).count(), 4, "three 503s, then delivered: {statuses:#?}");
    assert_eq!(statuses.iter().filter(|t| t.contains("poison.fun")).count(), 1, "a 400 is not retried: {statuses:#?}");
    assert!(statuses.last().unwrap().contains(&jid(102)), "{statuses:#?}");
    let letters = d.dead_letters("hook");
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(letters[0]["body"].as_str().unwrap().contains("poison.fun"), "{letters:#?}");
    assert_eq!(letters[0]["kind"], "invalid", "{letters:#?}");
    let message = letters[0]["message"].as_str().unwrap();
    assert!(message.contains("400") && message.contains("invalid_payload"), "{message}");
    assert!(!message.contains("Xq7v9s3cretpath"), "{message}");
    assert!(!d.log_text().contains("Xq7v9s3cretpath"), "the secret URL is not logged");
}

/// The write-only HTTP returners pass the contract suite where it applies
/// (their reads answer `unsupported`, as Salt's own write-only returners'
/// do), writing through their grant to a real endpoint.
#[test]
fn the_http_returners_pass_the_contract_suite() {
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let server = HttpServer::start(Some(&ca));
    for (name, options, paths) in [
        ("returner-splunk", "{ index = \"main\" }", "[\"/services/collector/event\"]"),
        ("returner-webhook", "{ events = true, path = \"/hook\" }", "[\"/hook\"]"),
    ] {
        let profile = http_profile_toml(dir.path(), "endpoint", &server, &ca, "");
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = {}\n{profile}\n[returners.r]\nmodule = {}\noptions = {options}\ngrants.http = {{ profile = \"endpoint\", methods = [\"POST\"], paths = {paths} }}\n",
                toml_path(&dir.path().join(format!("var-{name}"))),
                toml_path(&guest(name)),
            ),
        )
        .unwrap();
        server.clear();
        let report = super::testkit::passes(&guest(name), Some(&config));
        assert!(report["cases"].as_array().unwrap().iter().any(|c| c["outcome"] == "pass"), "{report}");
        let got = server.received();
        assert!(!got.is_empty(), "{name}: the suite's writes reached the endpoint");
        assert!(got.iter().all(|r| r.header("authorization") == Some(format!("Splunk {TOKEN}").as_str())));
    }
}
