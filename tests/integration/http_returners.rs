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

/// Run saltext's `returner` module on `lines` against `url` with the
/// harness's `args` (`--option KEY=JSON`, ...), the clock, host name and
/// uuid4 pinned; panics with its stderr when it fails.
pub(crate) fn run_saltext(returner: &str, url: &str, ca: &TestCa, args: &[&str], lines: &[Value]) {
    let python = returner_host_tests::salt::venv().join("bin/python");
    assert!(python.is_file(), "no Salt 3008 venv at {}: run scripts/setup", python.display());
    let mut cmd = Command::new(&python);
    cmd.arg(harness()).args([returner, "--url", url, "--ca-file", ca.ca_file.to_str().unwrap()]);
    cmd.args(["--pin-time", "1795423380.320186", "--pin-host", "minion-host", "--pin-uuid"]);
    cmd.args(args);
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

/// The grant the splunk returner needs.
const SPLUNK_GRANT: &str = "methods = [\"POST\"], paths = [\"/services/collector/event\"]";
/// The grant the elasticsearch returner needs.
const ES_GRANT: &str = "methods = [\"HEAD\", \"GET\", \"PUT\", \"POST\"], paths = [\"/*\", \"/*/_alias/*\", \"/*/_doc\", \"/*/_doc/*\"]";

/// `[returners.NAME]` running the shipped guest `module` with `options` (a
/// TOML inline table) and `grant` (the http grant's fields) on profile
/// `endpoint`.
fn returner_toml(name: &str, module: &str, options: &str, grant: &str) -> String {
    format!(
        "[returners.{name}]\nmodule = {}\noptions = {options}\ngrants.http = {{ profile = \"endpoint\", {grant} }}\n",
        toml_path(&guest(module))
    )
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
    run_saltext("splunk", &server.url(), &ca, &["--option", "index=\"main\"", "--option", "sourcetype=\"_json\""], &python_input);
    let salt: Vec<Received> = server.received();
    server.clear();
    let salt_events: usize = events.iter().map(|c| c["events"].as_array().unwrap().len()).sum();
    assert_eq!(salt.len(), returns.len() + salt_events, "saltext-splunk posts once per return and per event");

    // The sandboxed returner, through the daemon and its spool.
    let profile = http_profile_toml(dir.path(), "endpoint", &server, &ca, "");
    let returner = returner_toml("splunk", "returner-splunk", "{ index = \"main\", sourcetype = \"_json\", host = \"minion-host\" }", SPLUNK_GRANT);
    let d = config_daemon(dir.path(), "", &format!("{profile}\n{returner}"));
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

/// The HTTP returners pass the contract suite where it applies (the reads
/// they lack answer `unsupported`, as the Salt modules they follow have
/// none), writing through their grant to a real endpoint.
#[test]
fn the_http_returners_pass_the_contract_suite() {
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let server = HttpServer::start(Some(&ca));
    let es = HttpServer::start(Some(&ca));
    elasticsearch_emulator(&es);
    for (name, options, grant, server) in [
        ("returner-splunk", "{ index = \"main\" }", SPLUNK_GRANT, &server),
        ("returner-webhook", "{ events = true, path = \"/hook\" }", "methods = [\"POST\"], paths = [\"/hook\"]", &server),
        ("returner-elasticsearch", "{}", ES_GRANT, &es),
    ] {
        let profile = http_profile_toml(dir.path(), "endpoint", server, &ca, "");
        let config = dir.path().join(format!("{name}.toml"));
        let data = toml_path(&dir.path().join(format!("var-{name}")));
        std::fs::write(&config, format!("[server]\ndata_dir = {data}\n{profile}\n{}", returner_toml("r", name, options, grant))).unwrap();
        server.clear();
        let report = super::testkit::passes(&guest(name), Some(&config));
        assert!(report["cases"].as_array().unwrap().iter().any(|c| c["outcome"] == "pass"), "{report}");
        let got = server.received();
        assert!(!got.is_empty(), "{name}: the suite's writes reached the endpoint");
        assert!(got.iter().all(|r| r.header("authorization") == Some(format!("Splunk {TOKEN}").as_str())));
    }
}

/// An Elasticsearch as far as the two elasticsearch returners go: `GET /`
/// with the product header the Python client checks, indices and aliases
/// (`HEAD` 404 until created), documents kept by index and id.
fn elasticsearch_emulator(server: &HttpServer) {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;
    let indices: Mutex<BTreeSet<String>> = Mutex::default();
    let docs: Mutex<BTreeMap<String, Value>> = Mutex::default();
    server.answer(move |r: &Received| {
        let path = r.target.split('?').next().unwrap_or_default().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let es = |status: u16, body: Value| {
            Reply::Status(status, vec![("Content-Type".into(), "application/json".into()), ("X-Elastic-Product".into(), "Elasticsearch".into())], body.to_string().into_bytes())
        };
        match (r.method.as_str(), parts.as_slice()) {
            ("GET", [""]) => es(200, json!({ "version": { "number": "9.0.0" }, "tagline": "You Know, for Search" })),
            ("HEAD", [index]) => es(if indices.lock().unwrap().contains(*index) { 200 } else { 404 }, json!({})),
            ("PUT", [index]) => {
                indices.lock().unwrap().insert((*index).to_owned());
                es(200, json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }))
            }
            ("PUT", [_, "_alias", alias]) => {
                indices.lock().unwrap().insert((*alias).to_owned());
                es(200, json!({ "acknowledged": true }))
            }
            ("POST", [index, "_doc"]) => es(201, json!({ "_index": index, "_id": "generated", "result": "created" })),
            ("PUT", [index, "_doc", id]) => {
                let key = format!("{index}/{id}");
                let mut docs = docs.lock().unwrap();
                if r.target.contains("op_type=create") && docs.contains_key(&key) {
                    return es(409, json!({ "error": { "type": "version_conflict_engine_exception" }, "status": 409 }));
                }
                docs.insert(key, r.json());
                es(201, json!({ "_index": index, "_id": id, "result": "created" }))
            }
            ("GET", [index, "_doc", id]) => match docs.lock().unwrap().get(&format!("{index}/{id}")) {
                Some(doc) => es(200, json!({ "_index": index, "_id": id, "found": true, "_source": doc })),
                None => es(404, json!({ "_index": index, "_id": id, "found": false })),
            },
            _ => es(400, json!({ "error": format!("unexpected {} {}", r.method, r.target) })),
        }
    });
}

/// A request as compared: method, path without its query, and the body with
/// the document's `@timestamp` taken out.
fn es_request(r: &Received) -> (String, String, String) {
    let path = r.target.split('?').next().unwrap_or_default().to_owned();
    let mut body = String::from_utf8(r.body.clone()).unwrap();
    if let Some(rest) = body.strip_prefix("{\"@timestamp\": \"") {
        let (stamp, after) = rest.split_once('"').unwrap();
        assert!(stamp.ends_with("+00:00") && stamp.len() >= 25, "an ISO time in UTC: {stamp}");
        body = format!("{{\"@timestamp\": \"T\"{after}");
    }
    (r.method.clone(), path, body)
}

#[test]
fn elasticsearch_sends_what_saltext_elasticsearch_sends_for_the_real_fixtures() {
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let server = HttpServer::start(Some(&ca));
    elasticsearch_emulator(&server);
    let returns = salt_fixture_lines("minion-returns.jsonl");
    let events = event_calls();

    // saltext-elasticsearch itself, in its `host:` form (the one that can create an index).
    let mut python_input = returns.clone();
    python_input.extend(events.iter().cloned());
    run_saltext("elasticsearch", &server.url(), &ca, &["--es-host-key", "host"], &python_input);
    let salt: Vec<(String, String, String)> = server.received().iter().filter(|r| r.target != "/").map(es_request).collect();

    // The sandboxed returner, on an Elasticsearch of its own.
    let ours_server = HttpServer::start(Some(&ca));
    elasticsearch_emulator(&ours_server);
    let profile = http_profile_toml(dir.path(), "endpoint", &ours_server, &ca, "");
    let returner = returner_toml("es", "returner-elasticsearch", "{}", ES_GRANT);
    let d = config_daemon(dir.path(), "", &format!("{profile}\n{returner}"));
    for ret in &returns {
        d.write("es", "returner", &json!({ "ret": ret })).result();
    }
    for call in &events {
        d.write("es", "event_return", &json!({ "events": call["events"] })).result();
    }
    let ours: Vec<(String, String, String)> = ours_server.received().iter().map(es_request).collect();
    assert!(ours_server.received().iter().all(|r| r.header("authorization") == Some(format!("Splunk {TOKEN}").as_str())));

    assert_eq!(ours.len(), salt.len(), "the same requests, GET / aside: ours {ours:#?}\nsaltext {salt:#?}");
    for (i, (o, s)) in ours.iter().zip(&salt).enumerate() {
        // An event's document id: saltext's a random uuid4, ours derived from the event.
        let event_doc = |p: &str| p.strip_prefix("/salt-master-event-cache/_doc/").map(|id| id.len() == 36);
        if event_doc(&s.1).is_some() {
            assert_eq!((o.0.as_str(), event_doc(&o.1)), (s.0.as_str(), Some(true)), "request {i}: {o:?}");
        } else {
            assert_eq!((&o.0, &o.1), (&s.0, &s.1), "request {i}");
        }
        if o.0 == "PUT" && o.1.ends_with("-v1") {
            // saltext's index creation sends no settings (its bug); ours does.
            assert_eq!(s.2, "", "request {i}");
            assert_eq!(serde_json::from_str::<Value>(&o.2).unwrap(), json!({ "settings": { "number_of_shards": 1, "number_of_replicas": 0 } }));
        } else {
            assert_eq!(o.2, s.2, "request {i}: byte for byte but the @timestamp");
        }
    }
    let posts = ours.iter().filter(|r| r.0 == "POST").count();
    assert_eq!(posts, returns.len(), "one document per return");
}
