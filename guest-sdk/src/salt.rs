//! Salt's pure helpers that every returner needs in the same shape as Salt:
//! job ids (`salt.utils.jid`) and the job summaries the jobs runner reads
//! from `get_jids` / `get_jids_filter` (`format_job_instance` and family),
//! and JSON text as `salt.utils.json.dumps` writes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Abbreviated month names, indexed like Python's `calendar.month_abbr`.
const MONTH_ABBR: [&str; 13] = [
    "", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A new jid for `now` in Salt's format `%Y%m%d%H%M%S%f` (20 digits).
///
/// Salt uses the master's local time; a guest has no time zone, so this is
/// UTC (what Salt does with `utc_jid: True`).
pub fn gen_jid(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let secs_of_day = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:06}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_micros(),
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// When the job started, read from its jid the way Salt's `jid_to_time`
/// does: `"2026, Nov 23 08:43:00.320186"` for `20261123084300320186`.
///
/// `""` for a jid that is not 20 characters (nor longer with `_` after the
/// 20th, Salt's `unique_jid` form), and, where Salt would raise, for one
/// whose first 20 characters are not digits or whose month is past 12.
pub fn jid_to_time(jid: &str) -> String {
    let bytes = jid.as_bytes();
    let well_formed = bytes.len() == 20 || (bytes.len() > 21 && bytes[20] == b'_');
    if !well_formed || !bytes[..20].iter().all(u8::is_ascii_digit) {
        return String::new();
    }
    let Some(month) = jid[4..6]
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTH_ABBR.get(m))
    else {
        return String::new();
    };
    format!(
        "{}, {month} {} {}:{}:{}.{}",
        &jid[..4],
        &jid[6..8],
        &jid[8..10],
        &jid[10..12],
        &jid[12..14],
        &jid[14..20],
    )
}

/// Salt's `format_job_instance(job)`: the summary of a job's load.
///
/// Defaults apply only where the key is absent, as with Python's `dict.get`.
pub fn format_job_instance(load: &Value) -> Map<String, Value> {
    let field = |key: &str, default: &str| load.get(key).cloned().unwrap_or_else(|| json!(default));
    let mut job = Map::new();
    job.insert("Function".into(), field("fun", "unknown-function"));
    job.insert(
        "Arguments".into(),
        Value::Array(python_list(load.get("arg"))),
    );
    job.insert("Target".into(), field("tgt", "unknown-target"));
    job.insert("Target-type".into(), field("tgt_type", "list"));
    job.insert("User".into(), field("user", "root"));
    // Salt 3008 (salt#68481): `metadata=` given on the command line rides
    // in `arg` as a dict marked `__kwarg__: True`.
    let in_args = || {
        load.get("arg")?.as_array()?.iter().find_map(|arg| {
            (arg.get("__kwarg__") == Some(&Value::Bool(true))).then(|| arg.get("metadata")).flatten()
        })
    };
    let metadata = load
        .get("metadata")
        .or_else(|| load.get("kwargs").and_then(|kwargs| kwargs.get("metadata")))
        .or_else(in_args);
    if let Some(metadata) = metadata {
        job.insert("Metadata".into(), metadata.clone());
    }
    job
}

/// Python's `list(x)` of a JSON value: an array as is, a string's
/// characters, an object's keys; `[]` for what `list()` would reject.
fn python_list(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(text)) => text.chars().map(|c| Value::String(c.into())).collect(),
        Some(Value::Object(map)) => map.keys().map(|key| Value::String(key.clone())).collect(),
        _ => Vec::new(),
    }
}

/// Salt's `format_jid_instance(jid, job)`: the summary plus `StartTime`.
pub fn format_jid_instance(jid: &str, load: &Value) -> Map<String, Value> {
    let mut job = format_job_instance(load);
    job.insert("StartTime".into(), Value::String(jid_to_time(jid)));
    job
}

/// Salt's `format_jid_instance_ext(jid, job)`: the summary plus `JID` and `StartTime`.
pub fn format_jid_instance_ext(jid: &str, load: &Value) -> Map<String, Value> {
    let mut job = format_jid_instance(jid, load);
    job.insert("JID".into(), Value::String(jid.to_owned()));
    job
}

/// The `count` jobs with the greatest jids, ascending by jid: Salt's
/// `get_jids_filter` loop (`bisect.bisect` into a sorted list, dropping the
/// smallest once it holds `count`), so ties resolve as Salt's do.
pub fn newest<T>(jobs: impl IntoIterator<Item = (String, T)>, count: usize) -> Vec<T> {
    let mut kept: Vec<(String, T)> = Vec::new();
    for (jid, job) in jobs {
        let at = kept.partition_point(|(kept_jid, _)| *kept_jid <= jid);
        if kept.len() == count && at == 0 {
            continue;
        }
        kept.insert(at, (jid, job));
        if kept.len() > count {
            kept.remove(0);
        }
    }
    kept.into_iter().map(|(_, job)| job).collect()
}

/// JSON text as Salt's `salt.utils.json.dumps` writes it (Python's
/// `json.dumps` with `ensure_ascii=False`): `", "` between items and `": "`
/// after keys, keys in the object's order. Floats are written by
/// `serde_json`, which differs from Python only for exponents (`1e16`
/// where Python writes `1e+16`).
pub fn json_dumps(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing a Value to a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// `serde_json` formatting with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Salt's default `keep_jobs_seconds`: one day.
const DEFAULT_KEEP_JOBS_SECONDS: u64 = 86_400;
/// Salt's default of the legacy `keep_jobs` option, in hours.
const DEFAULT_KEEP_JOBS_HOURS: u64 = 24;

/// How long jobs are kept, `None` for ever: Salt's `get_keep_jobs_seconds`,
/// where a non-default legacy `keep_jobs` (hours) applies only while
/// `keep_jobs_seconds` is at its default.
pub fn keep_jobs(keep_jobs_seconds: Option<u64>, keep_jobs_hours: Option<u64>) -> Option<Duration> {
    let mut seconds = keep_jobs_seconds.unwrap_or(DEFAULT_KEEP_JOBS_SECONDS);
    let hours = keep_jobs_hours.unwrap_or(DEFAULT_KEEP_JOBS_HOURS);
    if hours != DEFAULT_KEEP_JOBS_HOURS && seconds == DEFAULT_KEEP_JOBS_SECONDS {
        seconds = hours.saturating_mul(3600);
    }
    (seconds != 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_jobs_defaults_to_a_day_and_zero_keeps_for_ever() {
        assert_eq!(keep_jobs(None, None), Some(Duration::from_secs(86_400)));
        assert_eq!(keep_jobs(Some(60), None), Some(Duration::from_secs(60)));
        assert_eq!(keep_jobs(Some(0), None), None);
    }

    #[test]
    fn legacy_keep_jobs_hours_apply_only_beside_the_default_seconds() {
        assert_eq!(keep_jobs(None, Some(2)), Some(Duration::from_secs(7200)));
        assert_eq!(keep_jobs(Some(60), Some(2)), Some(Duration::from_secs(60)));
        assert_eq!(keep_jobs(None, Some(0)), None);
        assert_eq!(keep_jobs(None, Some(24)), Some(Duration::from_secs(86_400)));
    }
    use std::time::Duration;

    #[test]
    fn jid_to_time_matches_salt() {
        assert_eq!(
            jid_to_time("20261123084300320186"),
            "2026, Nov 23 08:43:00.320186"
        );
        assert_eq!(
            jid_to_time("20260101000000000000_1234"),
            "2026, Jan 01 00:00:00.000000"
        );
        assert_eq!(
            jid_to_time("20260001000000000000"),
            "2026,  01 00:00:00.000000"
        );
    }

    #[test]
    fn jid_to_time_is_empty_where_salt_gives_up_or_would_raise() {
        assert_eq!(jid_to_time(""), "");
        assert_eq!(jid_to_time("req"), "");
        assert_eq!(jid_to_time("2026112308430032018"), "");
        assert_eq!(jid_to_time("202611230843003201860"), "");
        assert_eq!(jid_to_time("20261123084300320186_"), "");
        assert_eq!(jid_to_time("20261123084300320186x1"), "");
        assert_eq!(jid_to_time("2026x123084300320186"), "");
        assert_eq!(jid_to_time("20261323084300320186"), "");
        assert_eq!(jid_to_time("2026112308430032018é"), "");
    }

    #[test]
    fn gen_jid_formats_utc_with_microseconds() {
        assert_eq!(gen_jid(UNIX_EPOCH), "19700101000000000000");
        // 2026-11-23T08:43:00.320186Z
        let at = UNIX_EPOCH + Duration::new(1_795_423_380, 320_186_999);
        assert_eq!(gen_jid(at), "20261123084300320186");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(gen_jid(leap), "20000229235959000000");
        assert_eq!(jid_to_time(&gen_jid(at)), "2026, Nov 23 08:43:00.320186");
    }


    #[test]
    fn format_job_instance_summarises_a_publish_load() {
        let load = json!({
            "cmd": "publish", "tgt": "n1", "fun": "cmd.run", "arg": ["echo hi"],
            "tgt_type": "glob", "ret": "", "jid": "20261123084333091357",
            "kwargs": {"show_timeout": true}, "user": "root"
        });
        let job = format_jid_instance("20261123084333091357", &load);
        assert_eq!(
            Value::Object(job),
            json!({
                "Function": "cmd.run", "Arguments": ["echo hi"], "Target": "n1",
                "Target-type": "glob", "User": "root",
                "StartTime": "2026, Nov 23 08:43:33.091357"
            })
        );
    }

    #[test]
    fn absent_keys_take_salts_defaults_and_present_nulls_stay() {
        let job = format_job_instance(&json!({"fun": null}));
        assert_eq!(job["Function"], Value::Null);
        assert_eq!(job["Arguments"], json!([]));
        assert_eq!(job["Target"], "unknown-target");
        assert_eq!(job["Target-type"], "list");
        assert_eq!(job["User"], "root");
        assert!(!job.contains_key("Metadata"));
        let job = format_job_instance(&json!({"arg": "ab"}));
        assert_eq!(job["Function"], "unknown-function");
        assert_eq!(job["Arguments"], json!(["a", "b"]));
    }

    #[test]
    fn metadata_given_on_the_command_line_comes_from_a_kwarg_in_arg() {
        // Salt 3008's format_job_instance (salt#68481), so that
        // `jobs.list_jobs search_metadata=` finds `state.apply ... metadata=`.
        let load = json!({"fun": "state.apply", "arg": ["web", {"metadata": {"team": "ops"}, "__kwarg__": true}]});
        assert_eq!(format_job_instance(&load)["Metadata"], json!({"team": "ops"}));
        let unmarked = json!({"arg": [{"metadata": {"team": "ops"}}]});
        assert!(!format_job_instance(&unmarked).contains_key("Metadata"));
        let top_first = json!({"metadata": 1, "arg": [{"metadata": 2, "__kwarg__": true}]});
        assert_eq!(format_job_instance(&top_first)["Metadata"], json!(1));
    }

    #[test]
    fn metadata_comes_from_the_load_or_its_kwargs() {
        let top = format_job_instance(&json!({"metadata": {"a": 1}, "kwargs": {"metadata": 2}}));
        assert_eq!(top["Metadata"], json!({"a": 1}));
        let nested = format_job_instance(&json!({"kwargs": {"metadata": {"b": 2}}}));
        assert_eq!(nested["Metadata"], json!({"b": 2}));
    }

    #[test]
    fn format_jid_instance_ext_adds_the_jid() {
        let job = format_jid_instance_ext("20261123084300320186", &json!({"fun": "test.ping"}));
        assert_eq!(job["JID"], "20261123084300320186");
        assert_eq!(job["StartTime"], "2026, Nov 23 08:43:00.320186");
        assert_eq!(job["Function"], "test.ping");
    }

    fn jobs(jids: &[&str]) -> Vec<(String, String)> {
        jids.iter()
            .map(|jid| (jid.to_string(), jid.to_string()))
            .collect()
    }

    #[test]
    fn newest_keeps_the_greatest_jids_in_ascending_order() {
        let walked = jobs(&["20260103", "20260101", "20260105", "20260102", "20260104"]);
        assert_eq!(
            newest(walked.clone(), 3),
            ["20260103", "20260104", "20260105"]
        );
        assert_eq!(newest(walked.clone(), 10).len(), 5);
        assert_eq!(newest(walked.clone(), 1), ["20260105"]);
        assert!(newest(walked, 0).is_empty());
        assert!(newest(Vec::<(String, ())>::new(), 3).is_empty());
    }

    #[test]
    fn newest_resolves_equal_jids_like_bisect_right() {
        let walked = vec![
            ("2".to_string(), "first 2"),
            ("1".to_string(), "1"),
            ("2".to_string(), "second 2"),
        ];
        assert_eq!(newest(walked.clone(), 3), ["1", "first 2", "second 2"]);
        assert_eq!(newest(walked, 1), ["second 2"]);
    }

    #[test]
    fn json_dumps_writes_like_python() {
        // Python: json.dumps({"b": [1, 2.5, None], "a": {"x": "é\n"}, "t": True}, ensure_ascii=False)
        let value = json!({"b": [1, 2.5, null], "a": {"x": "é\n"}, "t": true});
        assert_eq!(json_dumps(&value), r#"{"b": [1, 2.5, null], "a": {"x": "é\n"}, "t": true}"#);
        assert_eq!(json_dumps(&json!("20261123084300320186")), r#""20261123084300320186""#);
        assert_eq!(json_dumps(&json!([])), "[]");
        assert_eq!(json_dumps(&json!({})), "{}");
    }
}
