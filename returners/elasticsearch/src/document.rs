//! What the returner sends, without sending it: index names, the job
//! document of `returner` byte for byte as saltext-elasticsearch builds it
//! (`_convert_keys`, the states options, Python's `isoformat()`), the
//! bodies of `event_return`, event ids, and path segments.
//! Pure, so it is unit-tested natively against the recorded Salt bodies.

use std::time::{SystemTime, UNIX_EPOCH};

use returner_sdk::salt::json_dumps;
use returner_sdk::serde_json::Map;
use returner_sdk::{Error, JobReturn, Result, Value, json};
use sha2::{Digest, Sha256};

/// The state functions saltext-elasticsearch treats as states (its
/// `STATE_FUNCTIONS`); `state.single` is not one of them.
pub const STATE_FUNCTIONS: &[&str] = &["state.apply", "state.highstate", "state.sls"];

/// The index of every state function under `states_single_index`.
const STATE_SINGLE_INDEX: &str = "salt-state_apply";

/// The options that shape a job document and its index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DocOptions {
    /// `index_date`: append `-YYYY.MM.DD` (UTC) to the index.
    pub index_date: bool,
    /// `states_count`: count succeeded and failed states into `counts`.
    pub states_count: bool,
    /// `states_order_output`: prefix state keys with their run number,
    /// add `_func`, and use the `-ordered` index.
    pub states_order_output: bool,
    /// `states_single_index`: all state functions go to `salt-state_apply`.
    pub states_single_index: bool,
}

/// A moment in UTC, to the microsecond (what Python's `datetime` keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    secs: i64,
    micros: u32,
}

impl Timestamp {
    /// `secs` since the epoch plus `micros` (taken modulo one second).
    pub fn new(secs: i64, micros: u32) -> Self {
        Self { secs: secs + i64::from(micros / 1_000_000), micros: micros % 1_000_000 }
    }

    /// Now, from the system clock (`datetime.now(UTC)`).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The moment `t` names, truncated to the microsecond.
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_micros() as i128,
            Err(before) => -(before.duration().as_micros() as i128),
        };
        let secs = micros.div_euclid(1_000_000);
        Self {
            secs: i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
            micros: micros.rem_euclid(1_000_000) as u32,
        }
    }

    /// The UTC date: (year, month, day).
    fn date(self) -> (i64, u32, u32) {
        civil_from_days(self.secs.div_euclid(86_400))
    }

    /// Python's `datetime.isoformat()` of an aware UTC datetime:
    /// `2026-11-23T08:43:00.320186+00:00`, without the fraction when the
    /// microsecond is 0 (`2026-11-23T08:43:00+00:00`).
    pub fn isoformat(self) -> String {
        let (year, month, day) = self.date();
        let of_day = self.secs.rem_euclid(86_400);
        let mut text = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        );
        if self.micros != 0 {
            text.push_str(&format!(".{:06}", self.micros));
        }
        text.push_str("+00:00");
        text
    }

    /// The index suffix of `index_date`: `strftime("%Y.%m.%d")` of the UTC date.
    pub fn index_date(self) -> String {
        let (year, month, day) = self.date();
        format!("{year:04}.{month:02}.{day:02}")
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01, either
/// side of it (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `fun` is one of [`STATE_FUNCTIONS`].
pub fn is_state_function(fun: &str) -> bool {
    STATE_FUNCTIONS.contains(&fun)
}

/// `salt-<fun with . as _>`, or `salt-state_apply` for a state function
/// under `states_single_index`.
pub fn base_index(fun: &str, states_single_index: bool) -> String {
    if states_single_index && is_state_function(fun) {
        STATE_SINGLE_INDEX.to_owned()
    } else {
        format!("salt-{}", fun.replace('.', "_"))
    }
}

/// `index`, with `-YYYY.MM.DD` of `now` when `index_date`.
pub fn dated(index: &str, index_date: bool, now: Timestamp) -> String {
    if index_date { format!("{index}-{}", now.index_date()) } else { index.to_owned() }
}

/// Python's truthiness of a JSON value: `null`, `false`, `0`, `""`, `[]`
/// and `{}` are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// saltext-elasticsearch's `_convert_keys`: through dicts and lists, a key
/// with a `.` becomes the key with `_`, and the dict gets `_orig_key`
/// holding the original key. `_orig_key` is inserted where the first
/// dotted key is (before it); each further dotted key of the same dict
/// overwrites its value in place, so it names the last one. A key equal to
/// one already in the new dict overwrites that one in place (Python's dict
/// assignment; the map keeps insertion order).
pub fn convert_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, sub) in map {
                let key = if key.contains('.') {
                    let renamed = key.replace('.', "_");
                    out.insert("_orig_key".to_owned(), Value::String(key));
                    renamed
                } else {
                    key
                };
                out.insert(key, convert_keys(sub));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(convert_keys).collect()),
        other => other,
    }
}

/// Python's `str.zfill`: zeros after the sign up to `width` characters.
fn zfill(text: &str, width: usize) -> String {
    if text.len() >= width {
        return text.to_owned();
    }
    let zeros = "0".repeat(width - text.len());
    match text.strip_prefix(['-', '+']) {
        Some(digits) => format!("{}{zeros}{digits}", &text[..1]),
        None => format!("{zeros}{text}"),
    }
}

/// `states_order_output` as elasticsearch9_mod does it: each state whose
/// key does not start with a digit gets `"_func": "<first>.<last part of
/// the key>"` and moves to the end under `<__run_num__ zero-padded>_|-<key>`
/// (padded to the digits of the number of states), so the states end up in
/// key order: already prefixed ones first, then the renamed ones in their
/// original order. Entries that are not a dict with an integer
/// `__run_num__` are left as they are (Salt raises on them).
pub fn order_states(states: &mut Map<String, Value>) {
    let width = states.len().to_string().len();
    let uids: Vec<String> = states.keys().cloned().collect();
    for uid in uids {
        if uid.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let Some(Value::Object(state)) = states.get_mut(&uid) else {
            continue;
        };
        let run_num = match state.get("__run_num__") {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        let first = uid.split("_|-").next().unwrap_or_default();
        let last = uid.rsplit("_|-").next().unwrap_or_default();
        state.insert("_func".to_owned(), Value::String(format!("{first}.{last}")));
        let new_uid = format!("{}_|-{uid}", zfill(&run_num, width));
        if let Some(moved) = states.shift_remove(&uid) {
            states.insert(new_uid, moved);
        }
    }
}

/// `states_count` as elasticsearch9_mod counts: over the values of the
/// return, dicts with a `result` key; `result` false is failed, anything
/// else (true, null) succeeded. Other values are skipped.
pub fn count_states(states: &Value) -> Map<String, Value> {
    let (mut succeeded, mut failed) = (0u64, 0u64);
    if let Value::Object(map) = states {
        for state in map.values() {
            match state.get("result") {
                None => {}
                Some(Value::Bool(false)) => failed += 1,
                Some(_) => succeeded += 1,
            }
        }
    }
    let mut counts = Map::new();
    counts.insert("succeeded".to_owned(), json!(succeeded));
    counts.insert("failed".to_owned(), json!(failed));
    counts
}

/// A job document and the index (alias) it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDocument {
    /// The index, e.g. `salt-test_ping` or `salt-state_apply-2026.11.23-ordered`.
    pub index: String,
    /// The body: `salt.utils.json.dumps` of the document.
    pub body: String,
}

/// The return value to store: `return`, or the return's `data` when
/// `return` is null (elasticsearch9_mod); `None` when both are null, a
/// return Salt does not send.
fn payload(ret: &JobReturn) -> Option<Value> {
    if !ret.ret.is_null() {
        return Some(ret.ret.clone());
    }
    ret.full.get("data").filter(|data| !data.is_null()).cloned()
}

/// The document of one job return and its index, as saltext-elasticsearch
/// builds them; `None` for a return that is not sent (null return).
///
/// Key order `@timestamp, success, retcode, minion, fun, jid, counts,
/// data`; `retcode` is the return's (1 when missing), `success` is
/// Python's `not retcode` (the return's own `success` is ignored).
pub fn job_document(ret: &JobReturn, opts: &DocOptions, now: Timestamp) -> Option<JobDocument> {
    let mut value = payload(ret)?;
    let mut index = dated(&base_index(&ret.fun, opts.states_single_index), opts.index_date, now);
    let mut counts = Map::new();
    if is_state_function(&ret.fun) {
        match &mut value {
            Value::Object(states) if opts.states_order_output => {
                index.push_str("-ordered");
                order_states(states);
            }
            Value::Object(_) => {}
            other => *other = json!({ "return": other.take() }),
        }
        if opts.states_count {
            counts = count_states(&value);
        }
    }
    let retcode = match ret.full.get("retcode") {
        Some(code) => code.clone(),
        None => ret.retcode.map_or_else(|| json!(1), |code| json!(code)),
    };
    let mut doc = Map::new();
    doc.insert("@timestamp".to_owned(), Value::String(now.isoformat()));
    doc.insert("success".to_owned(), Value::Bool(!truthy(&retcode)));
    doc.insert("retcode".to_owned(), retcode);
    doc.insert("minion".to_owned(), Value::String(ret.id.clone()));
    doc.insert("fun".to_owned(), Value::String(ret.fun.clone()));
    doc.insert("jid".to_owned(), Value::String(ret.jid.clone()));
    doc.insert("counts".to_owned(), Value::Object(counts));
    doc.insert("data".to_owned(), convert_keys(value));
    Some(JobDocument { index, body: json_dumps(&Value::Object(doc)) })
}

/// The body creating an index: its shard and replica counts.
pub fn index_settings(number_of_shards: u32, number_of_replicas: u32) -> String {
    json_dumps(&json!({
        "settings": { "number_of_shards": number_of_shards, "number_of_replicas": number_of_replicas }
    }))
}

/// The document of one event: `{"tag": ..., "data": ...}`.
pub fn event_body(tag: &str, data: &Value) -> String {
    let mut doc = Map::new();
    doc.insert("tag".to_owned(), Value::String(tag.to_owned()));
    doc.insert("data".to_owned(), data.clone());
    json_dumps(&Value::Object(doc))
}

/// The id of an event's document: a UUID (version 8, RFC 9562) made of the
/// first 128 bits of SHA-256 over the tag's length (8 bytes, big-endian),
/// the tag, and the data as `json_dumps` writes it. The same event
/// delivered again gets the same id, so it overwrites its document
/// instead of adding a second one.
pub fn event_id(tag: &str, data: &Value) -> String {
    let mut hash = Sha256::new();
    hash.update((tag.len() as u64).to_be_bytes());
    hash.update(tag.as_bytes());
    hash.update(json_dumps(data).as_bytes());
    let digest = hash.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// `text` as one path segment: percent-encoded but for unreserved
/// characters. `what` names it in the error for text no path can carry
/// (empty, `.`, `..`, or with `/`, `\`, `%` or a control character, which
/// the host refuses even encoded).
pub fn segment(what: &str, text: &str) -> Result<String> {
    if text.is_empty() || text == "." || text == ".." {
        return Err(Error::invalid(what, format!("{text:?} cannot be a path segment")));
    }
    if let Some(c) = text.chars().find(|c| matches!(c, '/' | '\\' | '%') || c.is_ascii_control()) {
        return Err(Error::invalid(what, format!("{text:?}: {c:?} cannot be sent in a path")));
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use returner_sdk::serde_json;

    /// The clock the expected bodies were recorded with: 1795423380.320186.
    const PINNED: Timestamp = Timestamp { secs: 1_795_423_380, micros: 320_186 };

    fn repo_file(relative: &str) -> Vec<u8> {
        let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn job_return(full: Value) -> JobReturn {
        let text = |key: &str| full.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        JobReturn {
            id: text("id"),
            jid: text("jid"),
            fun: text("fun"),
            fun_args: full.get("fun_args").cloned().unwrap_or_else(|| json!([])),
            ret: full.get("return").cloned().unwrap_or(Value::Null),
            retcode: full.get("retcode").and_then(Value::as_i64),
            success: full.get("success").and_then(Value::as_bool),
            full,
        }
    }

    fn fixtures() -> Vec<JobReturn> {
        let text = String::from_utf8(repo_file("host/src/testkit/salt/minion-returns.jsonl")).unwrap();
        text.lines().map(|line| job_return(serde_json::from_str(line).unwrap())).collect()
    }

    #[test]
    fn fixture_documents_are_byte_identical_to_salts() {
        let fixtures = fixtures();
        assert_eq!(fixtures.len(), 8);
        let indexes = [
            "salt-test_ping",
            "salt-cmd_run",
            "salt-cmd_run",
            "salt-test_arg",
            "salt-state_single",
            "salt-state_single",
            "salt-cmd_run",
            "salt-test_echo",
        ];
        for (n, ret) in fixtures.iter().enumerate() {
            let n = n + 1;
            let expected = repo_file(&format!("tests/salt-http/expected/elasticsearch/{n}.json"));
            let doc = job_document(ret, &DocOptions::default(), PINNED).expect("sent");
            assert_eq!(doc.index, indexes[n - 1], "fixture {n}");
            assert!(doc.body.as_bytes() == expected.as_slice(), "fixture {n}:\n{}\n{}", doc.body, String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn fixture_documents_match_the_recorded_requests() {
        // The POST bodies of the full request log, fresh server, in fixture order.
        let log = String::from_utf8(repo_file("tests/salt-http/expected/elasticsearch.requests.jsonl")).unwrap();
        let posted: Vec<(String, String)> = log
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["method"] == "POST")
            .map(|r| (r["path"].as_str().unwrap().to_owned(), r["body"].as_str().unwrap().to_owned()))
            .collect();
        let fixtures = fixtures();
        assert_eq!(posted.len(), fixtures.len());
        for (ret, (path, body)) in fixtures.iter().zip(posted) {
            let doc = job_document(ret, &DocOptions::default(), PINNED).unwrap();
            assert_eq!(path, format!("/{}/_doc", doc.index));
            assert_eq!(doc.body, body);
        }
    }

    #[test]
    fn event_bodies_match_the_recorded_master_calls() {
        let calls = String::from_utf8(repo_file("host/src/testkit/salt/master-job-cache-calls.jsonl")).unwrap();
        let mut want = Vec::new();
        for line in calls.lines() {
            let call: Value = serde_json::from_str(line).unwrap();
            match call["call"].as_str().unwrap() {
                "event_return" => {
                    // 8_mod sends the last event of a batch only; the recorded batches hold one.
                    let events = call["events"].as_array().unwrap();
                    assert_eq!(events.len(), 1);
                    let e = &events[0];
                    want.push(("salt-master-event-cache", event_body(e["tag"].as_str().unwrap(), &e["data"])));
                }
                _ => {}
            }
        }
        let log = String::from_utf8(repo_file("tests/salt-http/expected/elasticsearch-master-calls.requests.jsonl")).unwrap();
        let got: Vec<(String, String)> = log
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().starts_with("/salt-master-event-cache/_doc/"))
            .map(|r| (r["path"].as_str().unwrap().to_owned(), r["body"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(!got.is_empty());
        for ((index, body), (path, sent)) in want.into_iter().zip(got) {
            assert!(path.starts_with(&format!("/{index}/_doc/")), "{path}");
            assert_eq!(body, sent);
        }
    }

    #[test]
    fn convert_keys_inserts_orig_key_before_the_first_dotted_key_and_keeps_the_last() {
        let data: Value = serde_json::from_str(r#"{"a": 1, "b.c": {"x.y": [{"p.q": 2}]}, "d": 3, "e.f": 4}"#).unwrap();
        let converted = convert_keys(data);
        assert_eq!(
            json_dumps(&converted),
            r#"{"a": 1, "_orig_key": "e.f", "b_c": {"_orig_key": "x.y", "x_y": [{"_orig_key": "p.q", "p_q": 2}]}, "d": 3, "e_f": 4}"#
        );
        // A key already there is overwritten in place, `_orig_key` included.
        let data: Value = serde_json::from_str(r#"{"_orig_key": "mine", "a_b": 1, "a.b": 2, "z": null}"#).unwrap();
        assert_eq!(json_dumps(&convert_keys(data)), r#"{"_orig_key": "a.b", "a_b": 2, "z": null}"#);
        // Values and undotted keys are untouched.
        let data = json!({"k": "v.w", "l": [1, "x.y"]});
        assert_eq!(convert_keys(data.clone()), data);
    }

    #[test]
    fn index_names() {
        assert_eq!(base_index("test.ping", false), "salt-test_ping");
        assert_eq!(base_index("runner.jobs.lookup_jid", false), "salt-runner_jobs_lookup_jid");
        assert_eq!(base_index("state.sls", false), "salt-state_sls");
        for fun in STATE_FUNCTIONS {
            assert_eq!(base_index(fun, true), "salt-state_apply");
        }
        assert_eq!(base_index("state.single", true), "salt-state_single");
        assert_eq!(dated("salt-test_ping", true, PINNED), "salt-test_ping-2026.11.23");
        assert_eq!(dated("salt-test_ping", false, PINNED), "salt-test_ping");

        let mut ret = job_return(json!({"id": "m1", "jid": "1", "fun": "state.sls", "retcode": 0,
            "return": {"file_|-a_|-b_|-managed": {"result": true, "__run_num__": 0}}}));
        let opts = DocOptions { index_date: true, states_order_output: true, states_single_index: true, ..Default::default() };
        assert_eq!(job_document(&ret, &opts, PINNED).unwrap().index, "salt-state_apply-2026.11.23-ordered");
        // Ordering applies to dict returns only; a wrapped return keeps the plain index.
        ret.ret = json!(["Rendering SLS failed"]);
        assert_eq!(job_document(&ret, &opts, PINNED).unwrap().index, "salt-state_apply-2026.11.23");
    }

    #[test]
    fn timestamps_are_pythons_isoformat() {
        assert_eq!(PINNED.isoformat(), "2026-11-23T08:43:00.320186+00:00");
        assert_eq!(Timestamp::new(1_795_423_380, 0).isoformat(), "2026-11-23T08:43:00+00:00");
        assert_eq!(Timestamp::new(1_795_423_380, 7).isoformat(), "2026-11-23T08:43:00.000007+00:00");
        let leap = Timestamp::new(1_709_251_199, 1);
        assert_eq!(leap.isoformat(), "2024-02-29T23:59:59.000001+00:00");
        assert_eq!(leap.index_date(), "2024.02.29");
        assert_eq!(Timestamp::new(951_782_400, 0).isoformat(), "2000-02-29T00:00:00+00:00");
        assert_eq!(Timestamp::new(4_107_542_400 - 1, 999_999).isoformat(), "2100-02-28T23:59:59.999999+00:00");
        assert_eq!(Timestamp::new(0, 0).isoformat(), "1970-01-01T00:00:00+00:00");
        assert_eq!(Timestamp::new(-1, 500_000).isoformat(), "1969-12-31T23:59:59.500000+00:00");
        let t = UNIX_EPOCH + std::time::Duration::new(1_795_423_380, 320_186_999);
        assert_eq!(Timestamp::from_system_time(t), PINNED);
        let before = UNIX_EPOCH - std::time::Duration::from_micros(1);
        assert_eq!(Timestamp::from_system_time(before).isoformat(), "1969-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn event_ids_are_deterministic_uuids() {
        let data = json!({"_stamp": "2026-11-23T08:43:17.328593+00:00", "x": "é"});
        let id = event_id("salt/event_listen/start", &data);
        // Python: h = sha256(len(tag).to_bytes(8, "big") + tag + json.dumps(data, ensure_ascii=False)),
        // first 16 bytes, version 8, variant 10.
        assert_eq!(id, event_id("salt/event_listen/start", &data.clone()));
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(&id[14..15], "8");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, event_id("salt/event_listen/stop", &data));
        assert_ne!(id, event_id("salt/event_listen/start", &json!({"_stamp": "2026-11-23T08:43:17.328594+00:00", "x": "é"})));
        // The tag's length keeps tag and data apart.
        assert_ne!(event_id("a", &json!("bc")), event_id("a\"", &json!("c")));
    }

    #[test]
    fn event_id_matches_an_independent_computation() {
        // python3 -c 'import hashlib,json;t=b"salt/auth";d=json.dumps({"id": "n1", "n": [1, 2]}).encode();
        //   b=bytearray(hashlib.sha256(len(t).to_bytes(8,"big")+t+d).digest()[:16]);
        //   b[6]=b[6]&15|128;b[8]=b[8]&63|128;h=b.hex();print(h[:8],h[8:12],h[12:16],h[16:20],h[20:],sep="-")'
        assert_eq!(event_id("salt/auth", &json!({"id": "n1", "n": [1, 2]})), "ca0bfd72-5143-8312-b27a-7dd3a3ade8b3");
    }

    #[test]
    fn success_is_not_retcode() {
        let base = json!({"id": "m1", "jid": "1", "fun": "cmd.run", "return": "x", "success": true});
        let doc = |full: Value| {
            let body = job_document(&job_return(full), &DocOptions::default(), PINNED).unwrap().body;
            let v: Value = serde_json::from_str(&body).unwrap();
            (v["success"].clone(), v["retcode"].clone())
        };
        assert_eq!(doc(base.clone()), (json!(false), json!(1)), "missing retcode is 1");
        for (code, success) in [(json!(0), true), (json!(2), false), (json!(null), true), (json!(0.0), true), (json!("x"), false), (json!([]), true)] {
            let mut full = base.clone();
            full["retcode"] = code.clone();
            assert_eq!(doc(full), (json!(success), code));
        }
    }

    #[test]
    fn null_returns_are_not_sent_unless_data_stands_in() {
        let mut ret = job_return(json!({"id": "m1", "jid": "1", "fun": "test.ping", "return": null, "retcode": 0}));
        assert_eq!(job_document(&ret, &DocOptions::default(), PINNED), None);
        ret.full["data"] = json!({"a.b": 1});
        let doc = job_document(&ret, &DocOptions::default(), PINNED).unwrap();
        assert!(doc.body.ends_with(r#""data": {"_orig_key": "a.b", "a_b": 1}}"#), "{}", doc.body);
        for falsy in [json!(false), json!(0), json!("")] {
            ret.ret = falsy;
            assert!(job_document(&ret, &DocOptions::default(), PINNED).is_some());
        }
    }

    #[test]
    fn states_are_wrapped_counted_and_ordered_like_elasticsearch9_mod() {
        // Fixture 5 relabelled state.apply, as FORMATS.md observed it.
        let mut ret = fixtures().swap_remove(4);
        ret.fun = "state.apply".into();
        let opts = DocOptions { states_count: true, states_order_output: true, ..Default::default() };
        let doc = job_document(&ret, &opts, PINNED).unwrap();
        assert_eq!(doc.index, "salt-state_apply-ordered");
        let v: Value = serde_json::from_str(&doc.body).unwrap();
        assert_eq!(v["counts"], json!({"succeeded": 1, "failed": 0}));
        let data = v["data"].as_object().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["_orig_key", "0_|-file_|-/srv/demo/managed_txt_|-/srv/demo/managed_txt_|-managed"]
        );
        assert_eq!(data["_orig_key"], "0_|-file_|-/srv/demo/managed.txt_|-/srv/demo/managed.txt_|-managed");
        let state = data[keys[1]].as_object().unwrap();
        assert_eq!(state.keys().next_back().unwrap(), "_func");
        assert_eq!(state["_func"], "file.managed");

        // Padding to the digits of the number of states; prefixed keys stay first.
        let mut states = Map::new();
        for i in 0..11 {
            states.insert(format!("cmd_|-s{i}_|-s{i}_|-run"), json!({"result": i % 2 == 0, "__run_num__": 10 - i}));
        }
        states.insert("05_|-done".into(), json!({"result": null}));
        states.insert("odd".into(), json!("not a state"));
        let mut ordered = states.clone();
        order_states(&mut ordered);
        let keys: Vec<&str> = ordered.keys().map(String::as_str).collect();
        assert_eq!(keys[..2], ["05_|-done", "odd"]);
        assert_eq!(keys[2], "10_|-cmd_|-s0_|-s0_|-run");
        assert_eq!(keys[12], "00_|-cmd_|-s10_|-s10_|-run");
        assert_eq!(ordered[keys[2]]["_func"], "cmd.run");
        assert_eq!(count_states(&Value::Object(states)), {
            let mut m = Map::new();
            m.insert("succeeded".into(), json!(7));
            m.insert("failed".into(), json!(5));
            m
        });

        // A non-dict state return is wrapped; 9_mod's count skips it.
        ret.ret = json!(["Rendering SLS 'base:x' failed"]);
        let opts = DocOptions { states_count: true, ..Default::default() };
        let v: Value = serde_json::from_str(&job_document(&ret, &opts, PINNED).unwrap().body).unwrap();
        assert_eq!(v["data"], json!({"return": ["Rendering SLS 'base:x' failed"]}));
        assert_eq!(v["counts"], json!({"succeeded": 0, "failed": 0}));
        // state.single is not a state function here.
        ret.fun = "state.single".into();
        let v: Value = serde_json::from_str(&job_document(&ret, &opts, PINNED).unwrap().body).unwrap();
        assert_eq!(v["data"], json!(["Rendering SLS 'base:x' failed"]));
        assert_eq!(v["counts"], json!({}));
    }

    #[test]
    fn zfill_is_pythons() {
        assert_eq!(zfill("3", 2), "03");
        assert_eq!(zfill("-3", 3), "-03");
        assert_eq!(zfill("123", 2), "123");
    }

    #[test]
    fn request_bodies() {
        assert_eq!(index_settings(1, 0), r#"{"settings": {"number_of_shards": 1, "number_of_replicas": 0}}"#);
        assert_eq!(event_body("t", &json!({"é": null})), r#"{"tag": "t", "data": {"é": null}}"#);
    }

    #[test]
    fn segments() {
        assert_eq!(segment("id", "20261123084300320186_web1.example.com").unwrap(), "20261123084300320186_web1.example.com");
        assert_eq!(segment("id", "a b:é").unwrap(), "a%20b%3A%C3%A9");
        for bad in ["", ".", "..", "a/b", "a\\b", "50%", "a\nb"] {
            assert!(matches!(segment("id", bad), Err(Error::Invalid(m)) if m.starts_with("id: ")), "{bad:?}");
        }
    }
}
