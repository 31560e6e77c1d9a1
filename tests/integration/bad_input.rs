//! Bad input at the ingest API: each gets a 4xx naming the problem, the
//! daemon keeps serving, and nothing already accepted is lost.

use returner_host_tests::{Response, http_tcp, http_unix, temp_dir};
use serde_json::json;

use super::{bin, config_daemon, tcp_daemon, toml_path};

fn assert_error(r: &Response, status: u16, kind: &str, words: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error().0, kind, "{:?}", r.json);
    assert!(r.error().1.contains(words), "message {:?} should contain {words:?}", r.error().1);
}

#[test]
fn bad_requests_get_4xx_and_the_host_keeps_serving() {
    let dir = temp_dir();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let d = config_daemon(
        dir.path(),
        "max_body_bytes = 4096",
        &format!(
            "[returners.local_cache]\nmodule = \"builtin:local-cache\"\n[returners.local_cache.grants.fs]\ndir = {}\nmode = \"rw\"\n",
            toml_path(&jobs)
        ),
    );
    let socket = d.socket.clone();

    let accepted = json!({ "id": "m1", "jid": "20261123110000000001", "fun": "test.ping", "return": true, "retcode": 0, "success": true });
    assert_eq!(d.write("local_cache", "returner", &json!({ "ret": accepted })).result(), &json!(null));

    let post = |path: &str, body: &[u8]| http_unix(&socket, "POST", path, &[], body);
    let call = "/v1/returners/local_cache";
    let cases: Vec<(Response, u16, &str, &str)> = vec![
        (post(&format!("{call}/get_load"), b"{\"jid\": "), 400, "bad_request", "not valid JSON"),
        (post(&format!("{call}/get_load"), b"[\"jid\"]"), 400, "bad_request", "must be a JSON object"),
        (post(&format!("{call}/get_load"), br#"{"jid": 12}"#), 400, "bad_request", "`jid` of get_load must be a string"),
        (post(&format!("{call}/get_load"), br#"{}"#), 400, "bad_request", "needs the argument `jid`"),
        (post(&format!("{call}/get_load"), br#"{"jid": "1", "jdi": "2"}"#), 400, "bad_request", "unknown argument `jdi`"),
        (post(&format!("{call}/returner"), br#"{"ret": {"jid": "1"}}"#), 400, "bad_request", "needs a string `id`"),
        (post(&format!("{call}/get_jids_filter"), br#"{"count": "5"}"#), 400, "bad_request", "`count` of get_jids_filter"),
        (post(&format!("{call}/fetch_everything"), b"{}"), 404, "not_found", "no returner function `fetch_everything`"),
        (post("/v1/returners/mysql/get_load", br#"{"jid": "1"}"#), 404, "not_found", "no returner `mysql`; this host serves: local_cache"),
        (post(&format!("{call}/returner"), &vec![b' '; 8192]), 413, "payload_too_large", "over the limit of 4096 bytes"),
        (http_unix(&socket, "GET", &format!("{call}/get_load"), &[], b""), 405, "bad_request", "method not allowed"),
        (post("/v2/anything", b"{}"), 404, "not_found", "no such endpoint"),
    ];
    for (response, status, kind, words) in &cases {
        assert_error(response, *status, kind, words);
        // The host keeps serving: a good call right after each bad one.
        let ok = d.call("local_cache", "get_load", &json!({ "jid": "20000101000000000000" }));
        assert_eq!(ok.result(), &json!({}));
    }
    // Nothing accepted before was lost.
    let got = d.call("local_cache", "get_jid", &json!({ "jid": "20261123110000000001" }));
    assert_eq!(got.result()["m1"]["return"], true);
}

#[test]
fn tcp_requires_the_bearer_token() {
    let dir = temp_dir();
    let (_d, addr) = tcp_daemon(dir.path(), "s3cret-token");
    let path = "/v1/returners/local_cache/get_load";
    let body = br#"{"jid": "20000101000000000000"}"#;
    assert_error(&http_tcp(&addr, "POST", path, &[], body), 401, "unauthorized", "missing `Authorization: Bearer <token>`");
    assert_error(&http_tcp(&addr, "POST", path, &[("Authorization", "Bearer wrong")], body), 401, "unauthorized", "wrong bearer token");
    assert_error(&http_tcp(&addr, "POST", path, &[("Authorization", "Basic abc")], body), 401, "unauthorized", "must be `Bearer <token>`");
    let ok = http_tcp(&addr, "POST", path, &[("Authorization", "Bearer s3cret-token")], body);
    assert_eq!(ok.result(), &json!({}));
}

#[test]
fn tcp_without_a_token_is_refused_at_start() {
    let dir = temp_dir();
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "tcp:127.0.0.1:0", "--data-dir", dir.path().join("var").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires a bearer token"), "{stderr}");
}
