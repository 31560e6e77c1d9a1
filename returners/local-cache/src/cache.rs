//! The job cache on disk: Salt's `local_cache` layout under one root
//! directory, with JSON files where Salt writes msgpack.
//!
//! ```text
//! <root>/<hex[..2]>/<hex[2..]>/       one job (hex = sha256 of the jid)
//!     jid                             the jid; its age decides clean_old_jobs
//!     nocache                         present: drop the job's returns
//!     .load.p                         the publish load (first write wins)
//!     .minions.p, .minions.<syndic>.p the targeted minions
//!     endtime                         when the job ended
//!     <minion id>/return.p            {"return", "retcode", "success"}
//!     <minion id>/out.p               the outputter, when the return named one
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use returner_sdk::fs::{temp_path_for, write_atomic};
use returner_sdk::{Error, JobReturn, Result, Value, log};
use serde_json::Map;

use crate::jid::jid_dir;
use returner_sdk::salt::{format_jid_instance, format_jid_instance_ext, gen_jid, newest};
use crate::validate;

const JID: &str = "jid";
const NOCACHE: &str = "nocache";
const ENDTIME: &str = "endtime";
const LOAD_P: &str = ".load.p";
const MINIONS_P: &str = ".minions.p";
const RETURN_P: &str = "return.p";
const OUT_P: &str = "out.p";

/// How many fresh jids `prep_jid` tries when another call took the one it
/// made (Salt's `recurse_count` limit).
const PREP_JID_ATTEMPTS: u32 = 5;

/// How often `save_minions` merges and reads back before it gives up on a
/// list that concurrent saves keep replacing.
const MINIONS_MERGE_ATTEMPTS: u32 = 20;

/// A job directory without a `jid` file is corrupt and `clean_old_jobs`
/// removes it, but only once it is this old: a call that is creating the
/// job right now has not written the file yet.
const CORRUPT_JOB_GRACE: Duration = Duration::from_secs(60);

/// What became of a job return handed to [`JobCache::store_return`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// Written, under this jid (allocated when the return asked with `req`).
    Stored { jid: String },
    /// The minion had already returned for this job; Salt drops the extra
    /// return. `identical`: whether it matches the stored one (`None`: the
    /// stored one could not be read to compare).
    Duplicate { jid: String, identical: Option<bool> },
    /// The job was prepared with `nocache`.
    NoCache { jid: String },
}

/// A job that has a load, as Salt's `_walk_through` yields it.
struct LoadedJob {
    jid: String,
    load: Value,
    dir: PathBuf,
}

/// Salt's `local_cache` job cache rooted at one directory (Salt's
/// `cachedir/jobs`).
pub struct JobCache {
    root: PathBuf,
}

impl JobCache {
    /// The cache rooted at `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        JobCache { root: root.into() }
    }

    /// Fails unless the root exists: without it (no `fs` grant, so no
    /// preopen) every lookup would look like one in an empty cache.
    fn check_root(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::Backend(format!(
                "{} is not a directory",
                self.root.display()
            ))),
            Err(err) if err.kind() == ErrorKind::NotFound => Err(Error::NotFound(format!(
                "the job cache directory {} does not exist: does the returner have an fs grant?",
                self.root.display()
            ))),
            Err(err) => Err(err.into()),
        }
    }

    fn job_dir(&self, jid: &str) -> Result<PathBuf> {
        self.check_root()?;
        Ok(self.root.join(jid_dir(jid)))
    }

    /// Creates the job's directory and its `jid` file unless present, so
    /// every job that holds data can be aged by `clean_old_jobs`.
    fn ensure_job(&self, jid: &str) -> Result<PathBuf> {
        let dir = self.job_dir(jid)?;
        let created = create_job_dir(&dir)?;
        ensure_jid_file(&dir, jid, created)?;
        Ok(dir)
    }

    /// Salt's `prep_jid`: adopt `passed_jid` or make a new one from `now`,
    /// create the job, and (re)write its `jid` file.
    pub fn prep_jid(
        &self,
        nocache: bool,
        passed_jid: Option<&str>,
        now: SystemTime,
    ) -> Result<String> {
        let (jid, dir) = match passed_jid {
            Some(jid) => {
                validate::jid("passed_jid", jid)?;
                let dir = self.job_dir(jid)?;
                create_job_dir(&dir)?;
                (jid.to_owned(), dir)
            }
            None => self.create_new_job(now)?,
        };
        write_atomic(&dir.join(JID), jid.as_bytes())?;
        if nocache {
            write_atomic(&dir.join(NOCACHE), b"")?;
        }
        Ok(jid)
    }

    /// A job directory for a fresh jid that no other call holds; jids have
    /// microsecond resolution, so on a clash try the next microsecond.
    fn create_new_job(&self, now: SystemTime) -> Result<(String, PathBuf)> {
        for attempt in 0..PREP_JID_ATTEMPTS {
            let jid = gen_jid(now + Duration::from_micros(u64::from(attempt)));
            let dir = self.job_dir(&jid)?;
            if create_job_dir(&dir)? {
                return Ok((jid, dir));
            }
        }
        Err(Error::Backend(format!(
            "no free jid after {PREP_JID_ATTEMPTS} attempts at {}",
            gen_jid(now)
        )))
    }

    /// Salt's `returner`: store one minion's return of a job.
    pub fn store_return(&self, ret: &JobReturn, now: SystemTime) -> Result<ReturnOutcome> {
        check_return(ret)?;
        self.check_root()?;
        self.store_checked(ret, now, &mut HashMap::new())
    }

    /// [`JobCache::store_return`] of consecutive returns, in order: every
    /// return is checked before any is written, the root is looked at once,
    /// and each job's directory is made (and looked at for `nocache`) once.
    /// An error names the return (`rets[3]: ...`); the returns before it are
    /// stored.
    pub fn store_returns(&self, rets: &[JobReturn], now: SystemTime) -> Result<Vec<ReturnOutcome>> {
        let at = |i: usize| move |e: Error| e.context(format!("rets[{i}]"));
        for (i, ret) in rets.iter().enumerate() {
            check_return(ret).map_err(at(i))?;
        }
        self.check_root()?;
        let mut jobs = HashMap::new();
        rets.iter().enumerate().map(|(i, ret)| self.store_checked(ret, now, &mut jobs).map_err(at(i))).collect()
    }

    /// Store a return [`check_return`] passed, the root checked. `jobs`
    /// remembers the job directories this call made, by jid (`None`: the
    /// job is `nocache`).
    fn store_checked(
        &self,
        ret: &JobReturn,
        now: SystemTime,
        jobs: &mut HashMap<String, Option<PathBuf>>,
    ) -> Result<ReturnOutcome> {
        let jid = if ret.jid == "req" {
            let nocache = ret
                .full
                .get("nocache")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            self.prep_jid(nocache, None, now)?
        } else {
            ret.jid.clone()
        };
        let job_dir = match jobs.get(&jid) {
            Some(dir) => dir.clone(),
            None => {
                let dir = self.root.join(jid_dir(&jid));
                // Each file looked at is a host call: a job this call
                // creates has neither `nocache` nor `jid` yet.
                let created = create_job_dir(&dir)?;
                let dir = if !created && dir.join(NOCACHE).exists() {
                    None
                } else {
                    ensure_jid_file(&dir, &jid, created)?;
                    Some(dir)
                };
                jobs.insert(jid.clone(), dir.clone());
                dir
            }
        };
        let Some(job_dir) = job_dir else {
            return Ok(ReturnOutcome::NoCache { jid });
        };
        let minion_dir = job_dir.join(&ret.id);
        match fs::create_dir(&minion_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                if !minion_dir.is_dir() {
                    return Err(Error::invalid(
                        "ret.id",
                        format!(
                            "`{}` is the name of one of the job cache's own files",
                            ret.id
                        ),
                    ));
                }
                // Only a stored return makes this a duplicate: a directory
                // without one is left by an earlier attempt that failed
                // midway, and its retry must be stored.
                if minion_dir.join(RETURN_P).exists() {
                    let identical = same_as_stored(&minion_dir, ret);
                    return Ok(ReturnOutcome::Duplicate { jid, identical });
                }
            }
            Err(err) => return Err(err.into()),
        }
        // out.p first: readers take return.p as the sign of a complete return.
        if let Some(out) = ret.full.get("out") {
            write_atomic(&minion_dir.join(OUT_P), &serde_json::to_vec(out)?)?;
        }
        write_atomic(
            &minion_dir.join(RETURN_P),
            &serde_json::to_vec(&return_record(ret))?,
        )?;
        Ok(ReturnOutcome::Stored { jid })
    }

    /// Salt's `save_load`, except that the first load stored for a jid wins.
    /// Returns whether this call stored it. When it did and the load has a
    /// target, `minions` (if given) are saved like Salt does.
    pub fn save_load(&self, jid: &str, load: &Value, minions: Option<Vec<String>>) -> Result<bool> {
        validate::jid("jid", jid)?;
        let dir = self.ensure_job(jid)?;
        let stored = create_once(&dir.join(LOAD_P), &serde_json::to_vec(load)?)?;
        let has_target = load.get("tgt").is_some_and(|tgt| tgt != "");
        if stored
            && has_target
            && let Some(minions) = minions
        {
            self.save_minions(jid, &minions, None)?;
        }
        Ok(stored)
    }

    /// Salt's `save_minions`: `.minions.p`, or `.minions.<syndic_id>.p`.
    pub fn save_minions(
        &self,
        jid: &str,
        minions: &[String],
        syndic_id: Option<&str>,
    ) -> Result<()> {
        validate::jid("jid", jid)?;
        let file = match syndic_id {
            Some(syndic_id) => {
                validate::syndic_id("syndic_id", syndic_id)?;
                format!(".minions.{syndic_id}.p")
            }
            None => MINIONS_P.to_owned(),
        };
        let path = self.ensure_job(jid)?.join(file);
        // Salt 3008 merges the list with the one stored (sorted, no
        // duplicates): batch jobs and syndics save a jid's minions more
        // than once. Files have no compare-and-swap, so a concurrent save
        // may replace this one's write; reading back until every minion
        // given is there makes the merge hold for both.
        let wanted: BTreeSet<&str> = minions.iter().map(String::as_str).collect();
        let mut stored = read_minions(&path);
        for _ in 0..MINIONS_MERGE_ATTEMPTS {
            if let Some(stored) = &stored
                && wanted.iter().all(|m| stored.contains(*m))
            {
                return Ok(());
            }
            let merged: BTreeSet<String> =
                stored.unwrap_or_default().into_iter().chain(wanted.iter().map(|m| (*m).to_owned())).collect();
            write_atomic(&path, &serde_json::to_vec(&merged)?)?;
            stored = read_minions(&path);
        }
        Err(Error::Backend(format!(
            "the minions of job {jid} kept changing under {MINIONS_MERGE_ATTEMPTS} merges; try again"
        )))
    }

    /// Salt's `get_load`: the load, with `Minions` (every minions file,
    /// merged and sorted) when any were saved; `{}` for an unknown jid.
    pub fn get_load(&self, jid: &str) -> Result<Value> {
        validate::jid("jid", jid)?;
        let dir = self.job_dir(jid)?;
        let Some(mut load) = read_json(&dir.join(LOAD_P))? else {
            return Ok(Value::Object(Map::new()));
        };
        if load.is_null() {
            load = Value::Object(Map::new());
        }
        let minions = self.saved_minions(&dir)?;
        if !minions.is_empty()
            && let Some(object) = load.as_object_mut()
        {
            object.insert("Minions".into(), minions.into_iter().collect());
        }
        Ok(load)
    }

    fn saved_minions(&self, dir: &Path) -> Result<BTreeSet<String>> {
        let mut minions = BTreeSet::new();
        for (name, _) in list_dir(dir)? {
            if !is_minions_file(&name) {
                continue;
            }
            let path = dir.join(&name);
            match read_json(&path) {
                Ok(Some(value)) => match minion_ids(value) {
                    Some(ids) => minions.extend(ids),
                    // Salt 3008 leaves `Minions` out and warns likewise.
                    None => log::warn(&format!(
                        "skipping the minions file {}: it contains invalid minion data (not a list of ids)",
                        path.display()
                    )),
                },
                Ok(None) => {}
                Err(err) => log::warn(&format!(
                    "skipping the minions file {}: {err}",
                    path.display()
                )),
            }
        }
        Ok(minions)
    }

    /// Salt's `get_jid`: `{minion: {"return", "retcode", "success", "out"}}`
    /// for every minion with a stored return; `{}` for an unknown jid.
    pub fn get_jid(&self, jid: &str) -> Result<Value> {
        validate::jid("jid", jid)?;
        let dir = self.job_dir(jid)?;
        let mut returns = Map::new();
        for (minion, record) in minion_returns(&dir)? {
            returns.insert(minion, record);
        }
        Ok(Value::Object(returns))
    }

    /// Salt's `get_jids`: `{jid: job summary}` for every job with a load,
    /// with `EndTime` when `with_endtime` and the job has one.
    pub fn get_jids(&self, with_endtime: bool) -> Result<Value> {
        let mut jobs = Map::new();
        for job in self.loaded_jobs()? {
            let mut summary = format_jid_instance(&job.jid, &job.load);
            if with_endtime && let Some(endtime) = read_endtime(&job.dir)?.filter(|t| !t.is_empty())
            {
                summary.insert("EndTime".into(), Value::String(endtime));
            }
            jobs.insert(job.jid, Value::Object(summary));
        }
        Ok(Value::Object(jobs))
    }

    /// Salt's `get_jids_filter`: the newest `count` jobs, oldest first, each
    /// summary with its `JID`; without `saltutil.find_job` when `filter_find_job`.
    pub fn get_jids_filter(&self, count: u32, filter_find_job: bool) -> Result<Value> {
        let mut summaries = Vec::new();
        for job in self.loaded_jobs()? {
            let summary = format_jid_instance_ext(&job.jid, &job.load);
            let find_job = summary
                .get("Function")
                .is_some_and(|f| f == "saltutil.find_job");
            if !(filter_find_job && find_job) {
                summaries.push((job.jid, Value::Object(summary)));
            }
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        Ok(Value::Array(newest(summaries, count)))
    }

    /// Every minion id that has a stored return in any job, sorted.
    pub fn get_minions(&self) -> Result<Vec<String>> {
        let mut minions = BTreeSet::new();
        for dir in self.jobs()? {
            for (name, kind) in list_dir(&dir)? {
                if kind.is_dir()
                    && !name.starts_with('.')
                    && dir.join(&name).join(RETURN_P).is_file()
                {
                    minions.insert(name);
                }
            }
        }
        Ok(minions.into_iter().collect())
    }

    /// `{minion: return}` of each minion's latest return (by jid) of a job
    /// whose load ran `fun`.
    pub fn get_fun(&self, fun: &str) -> Result<Value> {
        let mut latest: BTreeMap<String, (String, Value)> = BTreeMap::new();
        for job in self.loaded_jobs()? {
            if job.load.get("fun").and_then(Value::as_str) != Some(fun) {
                continue;
            }
            for (minion, mut record) in minion_returns(&job.dir)? {
                if latest.get(&minion).is_some_and(|(jid, _)| *jid >= job.jid) {
                    continue;
                }
                let ret = record
                    .get_mut("return")
                    .map(Value::take)
                    .unwrap_or_default();
                latest.insert(minion, (job.jid.clone(), ret));
            }
        }
        Ok(Value::Object(
            latest
                .into_iter()
                .map(|(minion, (_, ret))| (minion, ret))
                .collect(),
        ))
    }

    /// Salt's `update_endtime`.
    pub fn update_endtime(&self, jid: &str, time: &str) -> Result<()> {
        validate::jid("jid", jid)?;
        let dir = self.ensure_job(jid)?;
        write_atomic(&dir.join(ENDTIME), time.as_bytes())?;
        Ok(())
    }

    /// Salt's `get_endtime`; `None` where Salt answers `False`.
    pub fn get_endtime(&self, jid: &str) -> Result<Option<String>> {
        validate::jid("jid", jid)?;
        read_endtime(&self.job_dir(jid)?)
    }

    /// Salt's `clean_old_jobs`: remove each job whose `jid` file was last
    /// written more than `keep` before `now`, each job without a `jid` file
    /// (corrupt), and the hash directories that were empty before the sweep
    /// and are older than `keep`. `None` keeps every job. A job that cannot
    /// be removed is logged and skipped.
    pub fn clean_old_jobs(&self, keep: Option<Duration>, now: SystemTime) -> Result<()> {
        let Some(keep) = keep else {
            return Ok(());
        };
        self.check_root()?;
        // As Salt 3008: a hash directory is removed only when it was empty
        // before this sweep and is older than `keep`. One this sweep empties
        // waits for the next, and a fresh one may be about to get its job
        // from a concurrent prep_jid or save_load.
        let mut empty = Vec::new();
        for (top, kind) in list_dir(&self.root)? {
            if !kind.is_dir() {
                continue;
            }
            let top_dir = self.root.join(top);
            let jobs = list_dir(&top_dir)?;
            if jobs.is_empty() {
                empty.push(top_dir);
                continue;
            }
            for (name, kind) in jobs {
                if !kind.is_dir() {
                    continue;
                }
                let dir = top_dir.join(name);
                let expired = match fs::metadata(dir.join(JID)) {
                    Ok(meta) if meta.is_file() => older_than(&meta, keep, now),
                    _ => fs::metadata(&dir)
                        .is_ok_and(|meta| older_than(&meta, CORRUPT_JOB_GRACE, now)),
                };
                if expired && let Err(err) = fs::remove_dir_all(&dir) {
                    log::warn(&format!(
                        "could not remove the old job {}: {err}",
                        dir.display()
                    ));
                }
            }
        }
        for top_dir in empty {
            if fs::metadata(&top_dir).is_ok_and(|meta| older_than(&meta, keep, now)) {
                // Fails, harmlessly, when a job arrived meanwhile.
                let _ = fs::remove_dir(&top_dir);
            }
        }
        Ok(())
    }

    /// Every job directory, in directory order.
    fn jobs(&self) -> Result<Vec<PathBuf>> {
        self.check_root()?;
        let mut jobs = Vec::new();
        for (top, kind) in list_dir(&self.root)? {
            if !kind.is_dir() {
                continue;
            }
            let top_dir = self.root.join(top);
            for (name, kind) in list_dir(&top_dir)? {
                if kind.is_dir() {
                    jobs.push(top_dir.join(name));
                }
            }
        }
        Ok(jobs)
    }

    /// Salt's `_walk_through`: every job with a non-empty load, under the jid
    /// its load names (else its `jid` file). Unreadable loads are logged and
    /// skipped, as Salt does.
    fn loaded_jobs(&self) -> Result<Vec<LoadedJob>> {
        let mut loaded = Vec::new();
        for dir in self.jobs()? {
            let load_path = dir.join(LOAD_P);
            let load = match read_json(&load_path) {
                Ok(Some(load)) if is_truthy(&load) => load,
                Ok(_) => continue,
                Err(err) => {
                    log::warn(&format!(
                        "skipping the job load {}: {err}",
                        load_path.display()
                    ));
                    continue;
                }
            };
            let jid = match load.get("jid") {
                Some(Value::String(jid)) => jid.clone(),
                Some(Value::Number(jid)) => jid.to_string(),
                _ => match fs::read_to_string(dir.join(JID)) {
                    Ok(jid) => jid,
                    Err(_) => continue,
                },
            };
            loaded.push(LoadedJob { jid, load, dir });
        }
        Ok(loaded)
    }
}

/// Creates a job's directory, and its hash directory when that is missing:
/// `true` when this call created it, `false` when it was there (which
/// `create_dir_all` does not tell, and finds out with one more call).
fn create_job_dir(dir: &Path) -> io::Result<bool> {
    let made = match fs::create_dir(dir) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::create_dir(dir)
        }
        made => made,
    };
    match made {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    }
}

/// Writes the job's `jid` file, unless the job was there (not `created`
/// by this call) and has one already.
fn ensure_jid_file(dir: &Path, jid: &str, created: bool) -> Result<()> {
    let jid_file = dir.join(JID);
    if created || !jid_file.is_file() {
        write_atomic(&jid_file, jid.as_bytes())?;
    }
    Ok(())
}

/// What a return must be before anything of it is written: a minion id
/// that is one path segment, and a jid (or `req`, asking for one).
fn check_return(ret: &JobReturn) -> Result<()> {
    validate::minion_id("ret.id", &ret.id)?;
    if ret.jid != "req" {
        validate::jid("ret.jid", &ret.jid)?;
    }
    Ok(())
}

/// What `return.p` holds: the keys of Salt's return record that the full
/// return carries.
fn return_record(ret: &JobReturn) -> Value {
    let mut record = Map::new();
    match ret.full.as_object() {
        Some(full) => {
            for key in ["return", "retcode", "success"] {
                if let Some(value) = full.get(key) {
                    record.insert(key.into(), value.clone());
                }
            }
        }
        // The contract promises an object; keep what the typed slots say.
        None => {
            record.insert("return".into(), ret.ret.clone());
            if let Some(retcode) = ret.retcode {
                record.insert("retcode".into(), retcode.into());
            }
            if let Some(success) = ret.success {
                record.insert("success".into(), success.into());
            }
        }
    }
    Value::Object(record)
}

/// Whether `ret` matches the return stored in `minion_dir` (Salt 3008's
/// `_log_duplicate_return`): its record, and its outputter when it names
/// one. Compared as the bytes `store_return` would write, so a duplicate
/// costs a read, not a parse. `None` when the stored one cannot be read.
fn same_as_stored(minion_dir: &Path, ret: &JobReturn) -> Option<bool> {
    let stored = fs::read(minion_dir.join(RETURN_P)).ok()?;
    let new = serde_json::to_vec(&return_record(ret)).ok()?;
    if stored != new {
        return Some(false);
    }
    match ret.full.get("out") {
        None => Some(true),
        Some(out) => {
            let stored_out = fs::read(minion_dir.join(OUT_P)).ok()?;
            Some(serde_json::to_vec(out).ok()? == stored_out)
        }
    }
}

/// Every minion's stored return in a job directory, as `get_jid` shows it,
/// sorted by minion id. Unreadable returns are logged and skipped.
fn minion_returns(dir: &Path) -> Result<Vec<(String, Value)>> {
    let mut returns = Vec::new();
    for (minion, kind) in list_dir(dir)? {
        if !kind.is_dir() || minion.starts_with('.') {
            continue;
        }
        let minion_dir = dir.join(&minion);
        let record = match read_json(&minion_dir.join(RETURN_P)) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(err) => {
                log::warn(&format!(
                    "skipping the return of {minion} in {}: {err}",
                    dir.display()
                ));
                continue;
            }
        };
        // Salt's older caches stored the bare return value.
        let mut record = match record {
            Value::Object(map) if map.contains_key("return") => map,
            bare => Map::from_iter([("return".to_owned(), bare)]),
        };
        match read_json(&minion_dir.join(OUT_P)) {
            Ok(Some(out)) => {
                record.insert("out".into(), out);
            }
            Ok(None) => {}
            Err(err) => log::warn(&format!(
                "skipping the outputter of {minion} in {}: {err}",
                dir.display()
            )),
        }
        returns.push((minion, Value::Object(record)));
    }
    returns.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(returns)
}

/// Writes `path` only if it does not exist yet, atomically for readers and
/// for a concurrent writer: `true` when this call created it.
fn create_once(path: &Path, contents: &[u8]) -> Result<bool> {
    let temp = temp_path_for(path);
    fs::write(&temp, contents)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
        // Hard links may be unsupported by the filesystem or the runtime;
        // exclusive creation still keeps the first writer, though a reader
        // may see the file before it is complete.
        Err(_) => create_exclusive(path, contents),
    }
}

fn create_exclusive(path: &Path, contents: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(err) => return Err(err.into()),
    };
    if let Err(err) = file.write_all(contents) {
        let _ = fs::remove_file(path);
        return Err(err.into());
    }
    Ok(true)
}

/// The minion ids in a minions file; `None` when it does not exist or is
/// not a list of ids (the next save replaces it).
fn read_minions(path: &Path) -> Option<BTreeSet<String>> {
    match read_json(path) {
        Ok(Some(value)) => minion_ids(value),
        Ok(None) => None,
        Err(err) => {
            log::warn(&format!("replacing the unreadable minions file {}: {err}", path.display()));
            None
        }
    }
}

/// The minion ids of a minions file's JSON; `None` when it is not a list.
fn minion_ids(value: Value) -> Option<BTreeSet<String>> {
    match value {
        Value::Array(ids) => Some(ids.into_iter().filter_map(|id| id.as_str().map(str::to_owned)).collect()),
        _ => None,
    }
}

/// The parsed JSON of a cache file; `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| Error::Backend(format!("corrupt cache file {}: {err}", path.display())))
}

fn read_endtime(dir: &Path) -> Result<Option<String>> {
    match fs::read_to_string(dir.join(ENDTIME)) {
        Ok(endtime) => Ok(Some(endtime.trim_matches('\n').to_owned())),
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// The names and kinds (not following symlinks) of a directory's entries;
/// nothing when the directory does not exist (another call may have just
/// removed it). Names that are not UTF-8 are not the cache's and are skipped.
fn list_dir(dir: &Path) -> io::Result<Vec<(String, fs::FileType)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(err) => return Err(err),
    };
    let mut listed = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // Another call removed it between the listing and its stat
            // (the host stats each entry as it lists): a temporary file
            // renamed into place, or a job swept; it is not there to read.
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if let (Ok(name), Ok(kind)) = (entry.file_name().into_string(), entry.file_type()) {
            listed.push((name, kind));
        }
    }
    Ok(listed)
}

/// `.minions.p` or Salt's glob `.minions.*.p`.
fn is_minions_file(name: &str) -> bool {
    name == MINIONS_P
        || (name.len() >= ".minions..p".len()
            && name.starts_with(".minions.")
            && name.ends_with(".p"))
}

fn older_than(meta: &fs::Metadata, age: Duration, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Python truthiness, which Salt's `if not job` applies to a load.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    /// A cache in a fresh temporary directory, removed on drop.
    struct TempCache {
        cache: JobCache,
        root: PathBuf,
    }

    impl TempCache {
        fn new() -> Self {
            let root = std::env::temp_dir().join(format!(
                "local-cache-test-{}",
                returner_sdk::fs::unique_token()
            ));
            fs::create_dir_all(&root).unwrap();
            TempCache {
                cache: JobCache::new(&root),
                root,
            }
        }
    }

    impl Drop for TempCache {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    impl std::ops::Deref for TempCache {
        type Target = JobCache;
        fn deref(&self) -> &JobCache {
            &self.cache
        }
    }

    const JID: &str = "20261123084332485602";

    fn job_return(id: &str, jid: &str, full: Value) -> JobReturn {
        JobReturn {
            id: id.into(),
            jid: jid.into(),
            fun: full["fun"].as_str().unwrap_or_default().into(),
            fun_args: full.get("fun_args").cloned().unwrap_or(json!([])),
            ret: full.get("return").cloned().unwrap_or_default(),
            retcode: full.get("retcode").and_then(Value::as_i64),
            success: full.get("success").and_then(Value::as_bool),
            full,
        }
    }

    fn publish_load(jid: &str, fun: &str) -> Value {
        json!({"cmd": "publish", "tgt": "n1", "fun": fun, "arg": [], "tgt_type": "glob",
               "ret": "", "jid": jid, "user": "root"})
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_423_380)
    }

    #[test]
    fn a_return_is_stored_where_salt_stores_it_and_read_back() {
        let cache = TempCache::new();
        let full = json!({"id": "n1", "jid": JID, "fun": "state.single", "return": {"a": 1},
                          "retcode": 0, "success": true, "out": "highstate", "user": "root"});
        let outcome = cache
            .store_return(&job_return("n1", JID, full), now())
            .unwrap();
        assert_eq!(outcome, ReturnOutcome::Stored { jid: JID.into() });

        let dir = cache.root.join(jid_dir(JID));
        assert_eq!(fs::read_to_string(dir.join("jid")).unwrap(), JID);
        let stored: Value =
            serde_json::from_slice(&fs::read(dir.join("n1/return.p")).unwrap()).unwrap();
        assert_eq!(
            stored,
            json!({"return": {"a": 1}, "retcode": 0, "success": true})
        );
        assert_eq!(
            cache.get_jid(JID).unwrap(),
            json!({"n1": {"return": {"a": 1}, "retcode": 0, "success": true, "out": "highstate"}})
        );
        assert_eq!(cache.get_minions().unwrap(), ["n1"]);
    }

    #[test]
    fn a_second_return_from_the_same_minion_is_dropped() {
        let cache = TempCache::new();
        let first = job_return("n1", JID, json!({"return": "first"}));
        let second = job_return("n1", JID, json!({"return": "second"}));
        cache.store_return(&first, now()).unwrap();
        assert_eq!(
            cache.store_return(&second, now()).unwrap(),
            ReturnOutcome::Duplicate { jid: JID.into(), identical: Some(false) }
        );
        assert_eq!(
            cache.get_jid(JID).unwrap(),
            json!({"n1": {"return": "first"}})
        );
        // Salt 3008 (salt#65301): a retry of the same return is told apart.
        assert_eq!(
            cache.store_return(&first, now()).unwrap(),
            ReturnOutcome::Duplicate { jid: JID.into(), identical: Some(true) }
        );
        let with_out = job_return("n2", JID, json!({"return": 1, "out": "highstate"}));
        cache.store_return(&with_out, now()).unwrap();
        assert_eq!(
            cache.store_return(&with_out, now()).unwrap(),
            ReturnOutcome::Duplicate { jid: JID.into(), identical: Some(true) }
        );
    }

    #[test]
    fn a_batch_stores_what_single_returns_store_and_keeps_the_first_of_a_minion() {
        let (single, batched) = (TempCache::new(), TempCache::new());
        let other = "20261123084332485603";
        let rets = [
            job_return("n1", JID, json!({"return": "first", "out": "txt"})),
            job_return("n2", other, json!({"return": 2})),
            job_return("n1", JID, json!({"return": "first", "out": "txt"})),
            job_return("n1", JID, json!({"return": "second"})),
        ];
        let one_by_one: Vec<ReturnOutcome> = rets.iter().map(|ret| single.store_return(ret, now()).unwrap()).collect();
        let outcomes = batched.store_returns(&rets, now()).unwrap();
        assert_eq!(outcomes, one_by_one);
        assert_eq!(
            outcomes[2..],
            [
                ReturnOutcome::Duplicate { jid: JID.into(), identical: Some(true) },
                ReturnOutcome::Duplicate { jid: JID.into(), identical: Some(false) },
            ]
        );
        for jid in [JID, other] {
            assert_eq!(batched.get_jid(jid).unwrap(), single.get_jid(jid).unwrap());
        }
        // Delivered again, the batch changes nothing.
        let again = batched.store_returns(&rets, now()).unwrap();
        assert!(again.iter().all(|o| matches!(o, ReturnOutcome::Duplicate { .. })), "{again:?}");
        assert_eq!(batched.get_jid(JID).unwrap(), json!({"n1": {"return": "first", "out": "txt"}}));
    }

    #[test]
    fn a_batch_with_an_invalid_return_writes_nothing_and_names_it() {
        let cache = TempCache::new();
        let rets = [job_return("n1", JID, json!({"return": 1})), job_return("../x", JID, json!({"return": 2}))];
        match cache.store_returns(&rets, now()) {
            Err(Error::Invalid(m)) => assert!(m.starts_with("rets[1]: ret.id"), "{m}"),
            other => panic!("expected invalid, got {other:?}"),
        }
        assert_eq!(cache.get_jid(JID).unwrap(), json!({}));
    }

    #[test]
    fn a_minion_directory_without_a_return_does_not_block_the_retry() {
        let cache = TempCache::new();
        fs::create_dir_all(cache.root.join(jid_dir(JID)).join("n1")).unwrap();
        let ret = job_return("n1", JID, json!({"return": true}));
        assert!(matches!(
            cache.store_return(&ret, now()).unwrap(),
            ReturnOutcome::Stored { .. }
        ));
        assert_eq!(cache.get_jid(JID).unwrap(), json!({"n1": {"return": true}}));
    }

    #[test]
    fn a_minion_named_like_a_cache_file_is_invalid() {
        let cache = TempCache::new();
        let ret = job_return("jid", JID, json!({"return": true}));
        assert!(
            matches!(cache.store_return(&ret, now()), Err(Error::Invalid(m)) if m.starts_with("ret.id"))
        );
        let ret = job_return("../x", JID, json!({"return": true}));
        assert!(matches!(
            cache.store_return(&ret, now()),
            Err(Error::Invalid(_))
        ));
        let ret = job_return("n1", "a/b", json!({"return": true}));
        assert!(
            matches!(cache.store_return(&ret, now()), Err(Error::Invalid(m)) if m.starts_with("ret.jid"))
        );
    }

    #[test]
    fn req_allocates_a_jid_and_nocache_drops_the_return() {
        let cache = TempCache::new();
        let ret = job_return("n1", "req", json!({"return": true}));
        let ReturnOutcome::Stored { jid } = cache.store_return(&ret, now()).unwrap() else {
            panic!("not stored");
        };
        assert_eq!(jid, "20261123084300000000");
        assert_eq!(
            cache.get_jid(&jid).unwrap(),
            json!({"n1": {"return": true}})
        );

        let nocache = cache
            .prep_jid(true, Some("20261123084400000000"), now())
            .unwrap();
        let ret = job_return("n1", &nocache, json!({"return": true}));
        assert!(matches!(
            cache.store_return(&ret, now()).unwrap(),
            ReturnOutcome::NoCache { .. }
        ));
        assert_eq!(cache.get_jid(&nocache).unwrap(), json!({}));
    }

    #[test]
    fn prep_jid_adopts_a_passed_jid_idempotently_and_never_reuses_a_new_one() {
        let cache = TempCache::new();
        assert_eq!(cache.prep_jid(false, Some(JID), now()).unwrap(), JID);
        assert_eq!(cache.prep_jid(false, Some(JID), now()).unwrap(), JID);
        let first = cache.prep_jid(false, None, now()).unwrap();
        let second = cache.prep_jid(false, None, now()).unwrap();
        assert_eq!(first, "20261123084300000000");
        assert_eq!(second, "20261123084300000001");
        assert!(
            matches!(cache.prep_jid(false, Some(""), now()), Err(Error::Invalid(m)) if m.starts_with("passed_jid"))
        );
    }

    #[test]
    fn the_first_load_wins_and_minions_are_merged_into_get_load() {
        let cache = TempCache::new();
        let publish = publish_load(JID, "test.ping");
        assert!(
            cache
                .save_load(JID, &publish, Some(vec!["n2".into(), "n1".into()]))
                .unwrap()
        );
        let later = json!({"cmd": "_return", "id": "n1", "jid": JID, "return": true});
        assert!(!cache.save_load(JID, &later, None).unwrap());
        cache
            .save_minions(JID, &["n3".into(), "n1".into()], Some("syndic1"))
            .unwrap();

        let mut expected = publish.clone();
        expected["Minions"] = json!(["n1", "n2", "n3"]);
        assert_eq!(cache.get_load(JID).unwrap(), expected);
        assert_eq!(cache.get_load("20000101000000000000").unwrap(), json!({}));
        let dir = cache.root.join(jid_dir(JID));
        assert!(dir.join(".minions.syndic1.p").is_file());
        assert_eq!(
            list_dir(&dir)
                .unwrap()
                .iter()
                .filter(|(n, _)| n.starts_with(".tmp."))
                .count(),
            0
        );
    }

    #[test]
    fn save_minions_merges_with_the_stored_list_sorted_without_duplicates() {
        // Salt 3008's local_cache.save_minions: batch jobs and syndics
        // save a jid's minions more than once; none is lost.
        let cache = TempCache::new();
        cache.save_minions(JID, &["m2".into(), "m1".into()], None).unwrap();
        cache.save_minions(JID, &["m3".into(), "m1".into()], None).unwrap();
        let file = cache.root.join(jid_dir(JID)).join(MINIONS_P);
        let stored: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(stored, json!(["m1", "m2", "m3"]));
        cache.save_minions(JID, &[], None).unwrap();
        let stored: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(stored, json!(["m1", "m2", "m3"]), "an empty save keeps the list");
        cache.save_minions("20260101000000000001", &[], None).unwrap();
        let empty = cache.root.join(jid_dir("20260101000000000001")).join(MINIONS_P);
        assert_eq!(fs::read(&empty).unwrap(), b"[]");
    }

    #[test]
    fn minions_are_saved_only_for_a_load_with_a_target() {
        let cache = TempCache::new();
        let untargeted = json!({"fun": "runner.jobs.list_jobs", "jid": JID, "tgt": ""});
        cache
            .save_load(JID, &untargeted, Some(vec!["n1".into()]))
            .unwrap();
        assert_eq!(cache.get_load(JID).unwrap(), untargeted);
    }

    #[test]
    fn a_syndic_id_that_could_escape_is_invalid() {
        let cache = TempCache::new();
        for bad in ["../x", "a/b", "a..b", "a\0"] {
            let err = cache.save_minions(JID, &[], Some(bad)).unwrap_err();
            assert!(
                matches!(&err, Error::Invalid(m) if m.starts_with("syndic_id")),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn get_jids_lists_every_job_with_a_load() {
        let cache = TempCache::new();
        let other = "20261123084333091357";
        cache
            .save_load(JID, &publish_load(JID, "test.ping"), None)
            .unwrap();
        cache
            .save_load(other, &publish_load(other, "cmd.run"), None)
            .unwrap();
        cache
            .prep_jid(false, Some("20261123084400000000"), now())
            .unwrap();
        cache
            .update_endtime(JID, "2026, Nov 23 08:43:33.000000\n")
            .unwrap();

        let jobs = cache.get_jids(false).unwrap();
        assert_eq!(jobs.as_object().unwrap().len(), 2);
        assert_eq!(
            jobs[JID],
            json!({"Function": "test.ping", "Arguments": [], "Target": "n1", "Target-type": "glob",
                   "User": "root", "StartTime": "2026, Nov 23 08:43:32.485602"})
        );
        assert_eq!(
            cache.get_jids(true).unwrap()[JID]["EndTime"],
            "2026, Nov 23 08:43:33.000000"
        );
        assert_eq!(
            cache.get_endtime(JID).unwrap().as_deref(),
            Some("2026, Nov 23 08:43:33.000000")
        );
        assert_eq!(cache.get_endtime(other).unwrap(), None);
    }

    #[test]
    fn get_jids_filter_takes_the_newest_and_can_skip_find_job() {
        let cache = TempCache::new();
        let jids = [
            "20261123084300000001",
            "20261123084300000002",
            "20261123084300000003",
        ];
        cache
            .save_load(jids[0], &publish_load(jids[0], "test.ping"), None)
            .unwrap();
        cache
            .save_load(jids[1], &publish_load(jids[1], "test.ping"), None)
            .unwrap();
        cache
            .save_load(jids[2], &publish_load(jids[2], "saltutil.find_job"), None)
            .unwrap();

        let jid_list = |jobs: Value| -> Vec<String> {
            jobs.as_array()
                .unwrap()
                .iter()
                .map(|job| job["JID"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            jid_list(cache.get_jids_filter(2, false).unwrap()),
            &jids[1..]
        );
        assert_eq!(
            jid_list(cache.get_jids_filter(2, true).unwrap()),
            &jids[..2]
        );
        assert_eq!(
            jid_list(cache.get_jids_filter(0, true).unwrap()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn get_fun_answers_each_minions_latest_return_of_the_function() {
        let cache = TempCache::new();
        let (old, new, other) = (
            "20261123084300000001",
            "20261123084300000002",
            "20261123084300000003",
        );
        for (jid, fun, value) in [
            (old, "test.echo", "old"),
            (new, "test.echo", "new"),
            (other, "cmd.run", "x"),
        ] {
            cache.save_load(jid, &publish_load(jid, fun), None).unwrap();
            cache
                .store_return(&job_return("n1", jid, json!({"return": value})), now())
                .unwrap();
        }
        cache
            .store_return(&job_return("n2", old, json!({"return": "n2 old"})), now())
            .unwrap();
        assert_eq!(
            cache.get_fun("test.echo").unwrap(),
            json!({"n1": "new", "n2": "n2 old"})
        );
        assert_eq!(cache.get_fun("test.nothing").unwrap(), json!({}));
    }

    #[test]
    fn clean_old_jobs_removes_expired_and_corrupt_jobs_and_empty_hash_dirs() {
        let cache = TempCache::new();
        let (old, fresh) = ("20261123084300000001", "20261123084300000002");
        cache.prep_jid(false, Some(old), now()).unwrap();
        cache.prep_jid(false, Some(fresh), now()).unwrap();
        let written = SystemTime::now();
        let old_jid_file = cache.root.join(jid_dir(old)).join("jid");
        fs::File::options()
            .write(true)
            .open(&old_jid_file)
            .unwrap()
            .set_modified(written - Duration::from_secs(7200))
            .unwrap();
        let corrupt = cache.root.join(jid_dir("corrupt"));
        fs::create_dir_all(&corrupt).unwrap();

        // A corrupt job is spared while a call may still be creating it.
        cache
            .clean_old_jobs(Some(Duration::from_secs(3600)), written)
            .unwrap();
        assert!(!cache.root.join(jid_dir(old)).exists());
        // The hash directory this sweep emptied waits for a later sweep
        // (Salt 3008): a concurrent prep_jid may be about to use it.
        let emptied = cache.root.join(jid_dir(old)).parent().unwrap().to_path_buf();
        assert!(emptied.exists());
        assert!(cache.root.join(jid_dir(fresh)).exists());
        assert!(corrupt.exists());
        // Empty before the next sweep but not older than `keep`: kept.
        cache
            .clean_old_jobs(Some(Duration::from_secs(3600)), written)
            .unwrap();
        assert!(emptied.exists());

        let later = written + CORRUPT_JOB_GRACE + Duration::from_secs(1);
        cache
            .clean_old_jobs(Some(Duration::from_secs(3600)), later)
            .unwrap();
        assert!(!corrupt.exists());
        assert!(cache.root.join(jid_dir(fresh)).exists());

        cache
            .clean_old_jobs(None, later + Duration::from_secs(86_400))
            .unwrap();
        assert!(cache.root.join(jid_dir(fresh)).exists());
        assert!(emptied.exists());

        // Empty before a sweep and older than `keep`: removed.
        cache
            .clean_old_jobs(Some(Duration::from_secs(3600)), written + Duration::from_secs(3601))
            .unwrap();
        assert!(!emptied.exists());
    }

    #[test]
    fn a_missing_root_is_an_error_not_an_empty_cache() {
        let cache = JobCache::new(std::env::temp_dir().join("local-cache-test-no-such-dir"));
        assert!(matches!(cache.get_jids(false), Err(Error::NotFound(m)) if m.contains("fs grant")));
        assert!(matches!(cache.get_load(JID), Err(Error::NotFound(_))));
        assert!(matches!(
            cache.save_load(JID, &json!({}), None),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            cache.clean_old_jobs(Some(Duration::ZERO), now()),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn minions_files_match_salts_glob() {
        assert!(is_minions_file(".minions.p"));
        assert!(is_minions_file(".minions.syndic1.p"));
        assert!(is_minions_file(".minions..p"));
        assert!(!is_minions_file(".minions.p.tmp"));
        assert!(!is_minions_file(".tmp..minions.p.0123456789abcdef"));
        assert!(!is_minions_file(".load.p"));
    }

    #[test]
    fn empty_loads_are_not_jobs() {
        assert!(!is_truthy(&json!({})));
        assert!(!is_truthy(&json!(null)));
        assert!(!is_truthy(&json!(0)));
        assert!(is_truthy(&json!({"fun": "x"})));
    }
}
