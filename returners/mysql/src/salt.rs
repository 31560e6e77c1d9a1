//! Salt's job formatting for `get_jids` and `get_jids_filter`
//! (`salt.utils.jid.format_job_instance` and family), and its jid helpers.
//! Ported from returners/local-cache, kept private to this returner.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

const MONTH_ABBR: [&str; 13] = ["", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Salt's `jid_to_time`: `"2026, Nov 23 08:43:00.320186"` for
/// `20261123084300320186`; `""` where Salt gives up or would raise.
pub fn jid_to_time(jid: &str) -> String {
    let bytes = jid.as_bytes();
    let well_formed = bytes.len() == 20 || (bytes.len() > 21 && bytes[20] == b'_');
    if !well_formed || !bytes[..20].iter().all(u8::is_ascii_digit) {
        return String::new();
    }
    let Some(month) = jid[4..6].parse::<usize>().ok().and_then(|m| MONTH_ABBR.get(m)) else {
        return String::new();
    };
    format!("{}, {month} {} {}:{}:{}.{}", &jid[..4], &jid[6..8], &jid[8..10], &jid[10..12], &jid[12..14], &jid[14..20])
}

/// A new jid for `now` in Salt's format `%Y%m%d%H%M%S%f`, in UTC (a guest
/// has no time zone; Salt's `utc_jid: True`).
pub fn gen_jid(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since_epoch.subsec_micros()
    )
}

/// Howard Hinnant's `civil_from_days`, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// Salt's `format_job_instance(job)`; defaults only where a key is absent.
pub fn format_job_instance(load: &Value) -> Map<String, Value> {
    let field = |key: &str, default: &str| load.get(key).cloned().unwrap_or_else(|| json!(default));
    let mut job = Map::new();
    job.insert("Function".into(), field("fun", "unknown-function"));
    job.insert("Arguments".into(), Value::Array(python_list(load.get("arg"))));
    job.insert("Target".into(), field("tgt", "unknown-target"));
    job.insert("Target-type".into(), field("tgt_type", "list"));
    job.insert("User".into(), field("user", "root"));
    let metadata = load.get("metadata").or_else(|| load.get("kwargs").and_then(|k| k.get("metadata")));
    if let Some(metadata) = metadata {
        job.insert("Metadata".into(), metadata.clone());
    }
    job
}

/// Python's `list(x)`: an array as is, a string's characters, an object's keys.
fn python_list(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(text)) => text.chars().map(|c| Value::String(c.into())).collect(),
        Some(Value::Object(map)) => map.keys().map(|k| Value::String(k.clone())).collect(),
        _ => Vec::new(),
    }
}

/// Salt's `format_jid_instance(jid, job)`: the summary plus `StartTime`.
pub fn format_jid_instance(jid: &str, load: &Value) -> Map<String, Value> {
    let mut job = format_job_instance(load);
    job.insert("StartTime".into(), Value::String(jid_to_time(jid)));
    job
}

/// Salt's `format_jid_instance_ext(jid, job)`: plus `JID`.
pub fn format_jid_instance_ext(jid: &str, load: &Value) -> Map<String, Value> {
    let mut job = format_jid_instance(jid, load);
    job.insert("JID".into(), Value::String(jid.to_owned()));
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jids_format_like_salt() {
        assert_eq!(jid_to_time("20261123084300320186"), "2026, Nov 23 08:43:00.320186");
        assert_eq!(jid_to_time("req"), "");
        let at = UNIX_EPOCH + Duration::new(1_795_423_380, 320_186_999);
        assert_eq!(gen_jid(at), "20261123084300320186");
        let job = format_jid_instance_ext("20261123084300320186", &json!({"fun": "test.ping", "tgt": "*"}));
        assert_eq!(
            Value::Object(job),
            json!({"Function": "test.ping", "Arguments": [], "Target": "*", "Target-type": "list",
                   "User": "root", "StartTime": "2026, Nov 23 08:43:00.320186", "JID": "20261123084300320186"})
        );
    }
}
