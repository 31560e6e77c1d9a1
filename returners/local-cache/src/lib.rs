//! Salt's `local_cache` returner (the master's default job cache) as a
//! returner-host guest: jobs, loads and returns as files in the directory
//! the `fs` grant names (Salt's `cachedir/jobs`), laid out as Salt lays them
//! out, with JSON where Salt writes msgpack. See the README for where it
//! deviates from Salt and why.
//!
//! Options (`options = { ... }` in the host config):
//! - `keep_jobs_seconds` (default 86400): `clean_old_jobs` removes jobs older
//!   than this; `0` keeps every job. Salt's older `keep_jobs` (hours) is
//!   honoured the way Salt honours it.
//! - `job_cache_store_endtime` (default false): `get_jids` shows `EndTime`.

mod cache;
mod jid;
mod validate;

use std::time::SystemTime;

use returner_sdk::{JobReturn, Result, Returner, Value, config, fs, log};

use crate::cache::{JobCache, ReturnOutcome};

/// The `local_cache` returner.
pub struct LocalCache;

returner_sdk::export_returner!(LocalCache, batch);

fn cache() -> JobCache {
    JobCache::new(fs::root())
}

/// Says in the log what became of a return that was not stored.
fn log_outcome(ret: &JobReturn, outcome: ReturnOutcome) {
    match outcome {
        ReturnOutcome::Stored { .. } | ReturnOutcome::NoCache { .. } => {}
        // As Salt 3008 (salt#65301): an identical duplicate is a retry
        // after a master timeout or a syndic re-forward, not news.
        ReturnOutcome::Duplicate { jid, identical: Some(true) } => log::debug(&format!(
            "Duplicate return from minion {} for jid {jid}; payload matches the cached return, \
             ignoring (likely a retry after a master timeout or a syndic re-forward)",
            ret.id
        )),
        ReturnOutcome::Duplicate { jid, identical: Some(false) } => log::warn(&format!(
            "Duplicate return from minion {} for jid {jid} with a differing payload; ignoring \
             the second return. This may indicate two minions sharing the same id, a \
             misconfigured returner, or in rare cases a replay attempt",
            ret.id
        )),
        ReturnOutcome::Duplicate { jid, identical: None } => log::warn(&format!(
            "Duplicate return from minion {} for jid {jid}; the cached return could not be \
             read for comparison; the return was dropped",
            ret.id
        )),
    }
}

impl Returner for LocalCache {
    fn returner(ret: JobReturn) -> Result<()> {
        log_outcome(&ret, cache().store_return(&ret, SystemTime::now())?);
        Ok(())
    }

    /// As `returner` for each, in order. A return delivered again (alone or
    /// in a batch) is an identical duplicate: logged at debug, not stored.
    fn returner_batch(rets: Vec<JobReturn>) -> Result<()> {
        let outcomes = cache().store_returns(&rets, SystemTime::now())?;
        for (ret, outcome) in rets.iter().zip(outcomes) {
            log_outcome(ret, outcome);
        }
        Ok(())
    }

    fn save_load(jid: &str, load: Value, minions: Option<Vec<String>>) -> Result<()> {
        if !cache().save_load(jid, &load, minions)? {
            log::debug(&format!("job {jid} already has a load; kept the first one"));
        }
        Ok(())
    }

    fn get_load(jid: &str) -> Result<Value> {
        cache().get_load(jid)
    }

    fn get_jid(jid: &str) -> Result<Value> {
        cache().get_jid(jid)
    }

    fn get_fun(fun: &str) -> Result<Value> {
        cache().get_fun(fun)
    }

    fn get_jids() -> Result<Value> {
        let with_endtime = config::get_as::<bool>("job_cache_store_endtime")?.unwrap_or(false);
        cache().get_jids(with_endtime)
    }

    fn get_jids_filter(count: u32, filter_find_job: bool) -> Result<Value> {
        cache().get_jids_filter(count, filter_find_job)
    }

    fn get_minions() -> Result<Vec<String>> {
        cache().get_minions()
    }

    fn prep_jid(nocache: bool, passed_jid: Option<String>) -> Result<String> {
        cache().prep_jid(nocache, passed_jid.as_deref(), SystemTime::now())
    }

    fn save_minions(jid: &str, minions: Vec<String>, syndic_id: Option<String>) -> Result<()> {
        cache().save_minions(jid, &minions, syndic_id.as_deref())
    }

    fn clean_old_jobs() -> Result<()> {
        let keep = returner_sdk::salt::keep_jobs(
            config::get_as::<u64>("keep_jobs_seconds")?,
            config::get_as::<u64>("keep_jobs")?,
        );
        cache().clean_old_jobs(keep, SystemTime::now())
    }

    fn update_endtime(jid: &str, time: String) -> Result<()> {
        cache().update_endtime(jid, &time)
    }

    fn get_endtime(jid: &str) -> Result<Option<String>> {
        cache().get_endtime(jid)
    }

    // event_return stays unsupported: Salt's local_cache has none.
}
