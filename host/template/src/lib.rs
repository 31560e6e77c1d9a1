//! {{name}}: a Salt returner for returner-host that keeps jobs as JSON files
//! in the directory the host grants it (seen here at `/data`):
//!
//! ```text
//! /data/<jid>/load.json              the job's publish load (the first save_load wins)
//! /data/<jid>/returns/<minion>.json  each minion's return, as Salt sent it
//! ```
//!
//! It implements what Salt's master job cache needs (`prep_jid`,
//! `save_load`, `get_load`, `returner`, `get_jid`, `get_jids`,
//! `get_jids_filter`, `get_minions`); every other function answers
//! `unsupported`, which the host reports the way Salt reports a missing one.
//! `returner-host test` checks it against the contract Salt relies on.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use returner_sdk::serde_json::{self, Map};
use returner_sdk::{Error, JobReturn, Result, Returner, Value, fs as granted, salt};

struct JsonFiles;

returner_sdk::export_returner!(JsonFiles);

impl Returner for JsonFiles {
    fn returner(ret: JobReturn) -> Result<()> {
        let dir = job_dir(&ret.jid)?.join("returns");
        fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{}.json", name("id", &ret.id)?));
        granted::write_atomic(&file, ret.full.to_string().as_bytes())?;
        Ok(())
    }

    fn save_load(jid: &str, load: Value, _minions: Option<Vec<String>>) -> Result<()> {
        let dir = job_dir(jid)?;
        fs::create_dir_all(&dir)?;
        // Write aside, then link into place: linking fails if a load is
        // already there, so the first load wins even against a racing call,
        // and a reader never sees half a file.
        let target = dir.join("load.json");
        let temp = granted::temp_path_for(&target);
        fs::write(&temp, load.to_string())?;
        let linked = fs::hard_link(&temp, &target);
        fs::remove_file(&temp)?;
        match linked {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn get_load(jid: &str) -> Result<Value> {
        match fs::read(job_dir(jid)?.join("load.json")) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            // Salt's jobs runner asks for any jid: unknown is `{}`, not an error.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Value::Object(Map::new())),
            Err(e) => Err(e.into()),
        }
    }

    fn get_jid(jid: &str) -> Result<Value> {
        let mut minions = Map::new();
        for (minion, ret) in returns(jid)? {
            let mut entry = Map::new();
            for key in ["return", "retcode", "success"] {
                if let Some(value) = ret.get(key) {
                    entry.insert(key.to_owned(), value.clone());
                }
            }
            minions.insert(minion, Value::Object(entry));
        }
        Ok(Value::Object(minions))
    }

    fn get_jids() -> Result<Value> {
        let mut jobs = Map::new();
        for (jid, load) in loads()? {
            jobs.insert(jid.clone(), Value::Object(salt::format_jid_instance(&jid, &load)));
        }
        Ok(Value::Object(jobs))
    }

    fn get_jids_filter(count: u32, filter_find_job: bool) -> Result<Value> {
        let jobs = loads()?.into_iter().filter_map(|(jid, load)| {
            let find_job = load.get("fun").and_then(Value::as_str) == Some("saltutil.find_job");
            (!(filter_find_job && find_job)).then(|| {
                let summary = Value::Object(salt::format_jid_instance_ext(&jid, &load));
                (jid, summary)
            })
        });
        Ok(Value::Array(salt::newest(jobs, count as usize)))
    }

    fn get_minions() -> Result<Vec<String>> {
        let mut minions = std::collections::BTreeSet::new();
        for jid in jids()? {
            minions.extend(returns(&jid)?.into_iter().map(|(minion, _)| minion));
        }
        Ok(minions.into_iter().collect())
    }

    fn prep_jid(_nocache: bool, passed_jid: Option<String>) -> Result<String> {
        if let Some(jid) = passed_jid {
            fs::create_dir_all(job_dir(&jid)?)?;
            return Ok(jid);
        }
        // Claim a new job directory; a jid another call holds is skipped.
        let now = SystemTime::now();
        for micros in 0..100 {
            let jid = salt::gen_jid(now + Duration::from_micros(micros));
            match fs::create_dir(job_dir(&jid)?) {
                Ok(()) => return Ok(jid),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Backend("no free jid in 100 tries".into()))
    }
}

/// A jid or minion id, refused when it could name another file.
fn name<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    let bad = value.is_empty() || value.starts_with('.') || value.contains(['/', '\\', '\0']);
    if bad { Err(Error::invalid(field, format!("{value:?} cannot be a file name"))) } else { Ok(value) }
}

fn job_dir(jid: &str) -> Result<PathBuf> {
    Ok(granted::root().join(name("jid", jid)?))
}

/// Every job directory's jid.
fn jids() -> Result<Vec<String>> {
    let mut jids = Vec::new();
    for entry in fs::read_dir(granted::root())? {
        let entry = entry?;
        let jid = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !jid.starts_with('.') {
            jids.push(jid);
        }
    }
    Ok(jids)
}

/// Every job with a load, by jid.
fn loads() -> Result<Vec<(String, Value)>> {
    let mut loads = Vec::new();
    for jid in jids()? {
        let load = JsonFiles::get_load(&jid)?;
        if load.as_object().is_some_and(|l| !l.is_empty()) {
            loads.push((jid, load));
        }
    }
    Ok(loads)
}

/// Each minion's stored return of job `jid`.
fn returns(jid: &str) -> Result<Vec<(String, Value)>> {
    let dir = job_dir(jid)?.join("returns");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut returns = Vec::new();
    for entry in entries {
        let file = entry?.file_name().to_string_lossy().into_owned();
        if let Some(minion) = file.strip_suffix(".json").filter(|_| !file.starts_with('.')) {
            let ret: Value = serde_json::from_slice(&fs::read(dir.join(&file))?)?;
            returns.push((minion.to_owned(), ret));
        }
    }
    Ok(returns)
}
