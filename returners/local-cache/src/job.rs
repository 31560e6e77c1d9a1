//! What `get_jids` and `get_jids_filter` answer about a job: Salt's
//! `format_job_instance` family and `get_jids_filter`'s newest-N selection.

use serde_json::{Map, Value, json};

use crate::jid::jid_to_time;

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
    let metadata = load
        .get("metadata")
        .or_else(|| load.get("kwargs").and_then(|kwargs| kwargs.get("metadata")));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
