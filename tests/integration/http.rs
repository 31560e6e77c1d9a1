//! The http capability through the daemon, against a real TLS server on
//! loopback: a hostile guest (`fixture-http-escaper`) tries every way out of
//! its grant (other hosts and ports, `..` and encoded paths, absolute URLs,
//! `Host` and CR/LF header injection, reading the secret back from an echo,
//! redirects off the profile, huge and slow responses). Each is refused or
//! bounded, each refusal audited once, nothing reaches another server, and
//! the secret never reaches the guest, the log or the audit log.

use std::path::Path;
use std::time::Duration;

use returner_host_tests::http::{HttpServer, Reply, TestCa};
use returner_host_tests::{Daemon, temp_dir};
use serde_json::{Value, json};

use super::hostile::audit_events;
use super::{config_daemon, toml_path};

/// The secret the profile adds; the guest must never see it.
pub(crate) const TOKEN: &str = "s3cret-7f1c2a9e-token";

/// An `http` profile named `name` for `server`, its Authorization header
/// from a token file in `dir`, trusting `ca`.
pub(crate) fn http_profile_toml(dir: &Path, name: &str, server: &HttpServer, ca: &TestCa, extra: &str) -> String {
    let token = dir.join(format!("{name}.token"));
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    format!(
        "[profiles.{name}]\nkind = \"http\"\nbase_url = \"{}\"\nheaders = {{ Authorization = {{ file = {}, prefix = \"Splunk \" }} }}\nca_file = {}\n{extra}\n",
        server.url(),
        toml_path(&token),
        toml_path(&ca.ca_file)
    )
}

fn escaper_daemon(dir: &Path, server: &HttpServer, ca: &TestCa) -> Daemon {
    let module = toml_path(&returner_host_tests::guest("fixture-http-escaper"));
    let profile = http_profile_toml(dir, "api", server, ca, "timeout_ms = 1500\nmax_response_bytes = 65536\nmax_request_bytes = 65536");
    // The same server, trusted through the public roots only: its certificate is not.
    let untrusted = format!("[profiles.untrusted]\nkind = \"http\"\nbase_url = \"{}\"\n", server.url());
    config_daemon(
        dir,
        &format!("audit_log = {}", toml_path(&dir.join("audit.jsonl"))),
        &format!(
            r#"
{profile}
[returners.escaper]
module = {module}
options = {{ note = "options are not secrets" }}
limits = {{ deadline_ms = 8000 }}
grants.http = {{ profile = "api", methods = ["GET", "POST"], paths = ["/services/collector/event", "/echo", "/redirect/*", "/big/*", "/slow", "/down"] }}

[returners.nogrant]
module = {module}

{untrusted}
[returners.untrusting]
module = {module}
grants.http = {{ profile = "untrusted", methods = ["POST"], paths = ["/services/collector/event"] }}
"#
        ),
    )
}

/// Send the request `spec` through the guest; what it saw.
fn send(d: &Daemon, returner: &str, spec: Value) -> Value {
    d.call(returner, "get_load", &json!({ "jid": spec.to_string() })).result().clone()
}

fn request(method: &str, path: &str) -> Value {
    json!({ "method": method, "path": path, "headers": [], "body": "" })
}

fn with_headers(method: &str, path: &str, headers: Value) -> Value {
    json!({ "method": method, "path": path, "headers": headers, "body": "" })
}

#[test]
fn every_escape_from_an_http_grant_is_refused_or_bounded_and_the_secret_stays_host_side() {
    let dir = temp_dir();
    let ca = TestCa::new(dir.path());
    let server = HttpServer::start(Some(&ca));
    let other = HttpServer::start(Some(&ca));
    let other_port = other.port();
    let port = server.port();
    server.answer(move |r| match r.target.as_str() {
        "/echo" => Reply::Echo,
        "/redirect/off" => Reply::Status(302, vec![("Location".into(), format!("https://127.0.0.1:{other_port}/x"))], vec![]),
        "/redirect/up" => Reply::Status(302, vec![("Location".into(), "/admin".into())], vec![]),
        "/redirect/on" => Reply::Status(307, vec![("Location".into(), "/echo".into())], vec![]),
        "/big/sized" => Reply::Huge(1024 * 1024),
        "/big/chunked" => Reply::HugeChunked(1024 * 1024),
        "/slow" => Reply::Slow { every: Duration::from_millis(300), n: 60 },
        _ => Reply::json(200, json!({ "text": "Success", "code": 0 })),
    });
    let mut d = escaper_daemon(dir.path(), &server, &ca);

    // The control: a granted request reaches the server with the secret added.
    let ok = send(&d, "escaper", json!({ "method": "POST", "path": "/services/collector/event", "headers": [["Content-Type", "application/json"]], "body": "{\"event\": 1}" }));
    assert_eq!((ok["outcome"].as_str(), ok["status"].as_u64()), (Some("ok"), Some(200)), "{ok}");
    assert_eq!(ok["body"], json!({ "text": "Success", "code": 0 }).to_string());
    let got = server.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].method.as_str(), got[0].target.as_str()), ("POST", "/services/collector/event"));
    assert_eq!(got[0].header("authorization"), Some(format!("Splunk {TOKEN}").as_str()));
    assert_eq!(got[0].header("host"), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].body, b"{\"event\": 1}");
    server.clear();

    // Every escape: refused before anything is sent.
    let other_hosts = [
        format!("https://127.0.0.1:{other_port}/services/collector/event"),
        format!("//127.0.0.1:{other_port}/services/collector/event"),
        format!("127.0.0.1:{other_port}/services/collector/event"),
        format!("@127.0.0.1:{other_port}/services/collector/event"),
        format!(":{other_port}/services/collector/event"),
        "http://localhost/services/collector/event".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    let paths = [
        "/services/collector/../../admin",
        "/services/collector/event/..",
        "/services/collector/%2e%2e/%2e%2e/admin",
        "/services/collector/.%2E/event",
        "/services%2fcollector%2fevent",
        "/services/collector%5cevent",
        "/services\\collector\\event",
        "/services/collector/event%00",
        "/services/collector/event%2500",
        "/services//collector/event",
        "/services/collector/event#frag",
        "/services/collector/event\r\nHost: evil",
        "/services/collector/event HTTP/1.1\r\nX: y",
        "/admin",
        "/services/collector",
        "/big/sized/more",
    ];
    let mut escapes: Vec<(Value, &str)> = Vec::new();
    for p in &other_hosts {
        escapes.push((request("POST", p), "another host"));
    }
    for p in paths {
        escapes.push((request("POST", p), "a path"));
    }
    escapes.push((request("DELETE", "/services/collector/event"), "a method"));
    escapes.push((request("PUT", "/echo"), "a method"));
    for headers in [
        json!([["Host", "evil.example"]]),
        json!([["host", format!("127.0.0.1:{other_port}")]]),
        json!([["X-Forwarded-Host", "evil.example"]]),
        json!([["Forwarded", "host=evil.example"]]),
        json!([["X-HTTP-Method-Override", "DELETE"]]),
        json!([["Authorization", "Basic ZXZpbA=="]]),
        json!([["authorization", "x"]]),
        json!([["X-A", "v\r\nHost: evil.example"]]),
        json!([["X-A", "v\nX-Injected: 1"]]),
        json!([["X-A\r\nHost", "evil.example"]]),
        json!([["Transfer-Encoding", "chunked"]]),
        json!([["Content-Length", "0"]]),
        json!([["Connection", "close"]]),
        json!([["Proxy-Authorization", "x"]]),
    ] {
        escapes.push((with_headers("POST", "/services/collector/event", headers), "a header"));
    }
    for (spec, what) in &escapes {
        let r = send(&d, "escaper", spec.clone());
        assert_eq!(r["outcome"], "denied", "{what} {spec}: {r}");
        let message = r["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("http {} of `", spec["method"].as_str().unwrap())) && message.contains("returner `escaper`"), "{message}");
    }
    assert!(server.received().is_empty(), "no escape reached the server: {:#?}", server.received());

    // The secret never comes back: an echo of the request has it redacted.
    let echo = send(&d, "escaper", request("GET", "/echo"));
    assert_eq!(echo["outcome"], "ok", "{echo}");
    let body = echo["body"].as_str().unwrap();
    assert!(body.contains("Authorization: [redacted]") || body.contains("authorization: [redacted]"), "{body}");
    assert!(!body.contains(TOKEN), "{body}");

    // Redirects: never followed; one off the granted paths is refused without its Location.
    let off = send(&d, "escaper", request("GET", "/redirect/off"));
    assert_eq!(off["outcome"], "denied", "{off}");
    assert!(!off["message"].as_str().unwrap().contains(&other_port.to_string()), "{off}");
    let up = send(&d, "escaper", request("GET", "/redirect/up"));
    assert_eq!(up["outcome"], "denied", "a redirect to an ungranted path of the same host: {up}");
    let on = send(&d, "escaper", request("GET", "/redirect/on"));
    assert_eq!((on["outcome"].as_str(), on["status"].as_u64()), (Some("ok"), Some(307)), "{on}");
    let targets: Vec<String> = server.received().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/echo", "/redirect/off", "/redirect/up", "/redirect/on"], "nothing followed");

    // A body over the profile's cap is refused before anything is sent.
    server.clear();
    let big = send(&d, "escaper", json!({ "method": "POST", "path": "/services/collector/event", "headers": [], "body": "x".repeat(65537) }));
    assert_eq!(big["outcome"], "limit", "{big}");
    assert!(big["message"].as_str().unwrap().contains("max_request_bytes"), "{big}");
    assert!(server.received().is_empty());

    // Huge and slow responses are bounded.
    for p in ["/big/sized", "/big/chunked"] {
        let r = send(&d, "escaper", request("GET", p));
        assert_eq!(r["outcome"], "limit", "{p}: {r}");
        assert!(r["message"].as_str().unwrap().contains("max_response_bytes"), "{r}");
    }
    let slow = send(&d, "escaper", request("GET", "/slow"));
    assert_eq!(slow["outcome"], "backend", "a response a byte at a time ends at the profile's timeout: {slow}");
    assert!(slow["message"].as_str().unwrap().contains("timeout_ms is 1500"), "{slow}");

    // TLS is verified: a certificate the profile's roots did not sign is a backend error, nothing sent.
    server.clear();
    let untrusted = send(&d, "untrusting", request("POST", "/services/collector/event"));
    assert_eq!(untrusted["outcome"], "backend", "{untrusted}");
    assert!(untrusted["message"].as_str().unwrap().to_lowercase().contains("certificate"), "{untrusted}");
    assert!(server.received().is_empty());

    // An endpoint that is down is a backend error naming it.
    let mut server = server;
    server.stop();
    let down = send(&d, "escaper", request("POST", "/down"));
    assert_eq!(down["outcome"], "backend", "{down}");
    assert!(down["message"].as_str().unwrap().contains("could not connect"), "{down}");

    // No grant: denied.
    let none = send(&d, "nogrant", request("POST", "/services/collector/event"));
    assert_eq!(none["outcome"], "denied");
    assert!(none["message"].as_str().unwrap().contains("it has no http grant"), "{none}");

    // The guest's config holds its options only.
    let config = d.call("escaper", "get_fun", &json!({ "fun": "config" })).result().clone();
    assert_eq!(config["all"], json!({ "note": "options are not secrets" }));

    assert!(other.received().is_empty(), "nothing reached the other server: {:#?}", other.received());
    assert!(d.is_running());

    // One audit event per refusal, none holding the secret; the log never has it either.
    let events = audit_events(&dir.path().join("audit.jsonl"));
    let http_denials: Vec<&Value> = events.iter().filter(|e| e["fields"]["capability"] == "http").collect();
    assert_eq!(http_denials.len(), escapes.len() + 3, "each escape, two redirects and the missing grant: {http_denials:#?}");
    assert!(http_denials.iter().all(|e| e["fields"]["outcome"] == "denied"));
    let audit_text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(!audit_text.contains(TOKEN));
    assert!(!d.log_text().contains(TOKEN), "the secret is not in the log");
    let metrics = d.metrics();
    let denied = metrics.get("returner_host_denials_total{returner=\"escaper\",capability=\"http\"}");
    assert_eq!(denied, Some(&((escapes.len() + 2) as f64)), "{metrics:#?}");
}
