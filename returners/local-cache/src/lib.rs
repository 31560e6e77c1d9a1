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

use std::time::{Duration, SystemTime};

use returner_sdk::{JobReturn, Result, Returner, Value, config, fs, log};

use crate::cache::{JobCache, ReturnOutcome};

/// Salt's default `keep_jobs_seconds`: one day.
const DEFAULT_KEEP_JOBS_SECONDS: u64 = 86_400;
/// Salt's default of the legacy `keep_jobs` option, in hours.
const DEFAULT_KEEP_JOBS_HOURS: u64 = 24;

/// The `local_cache` returner.
pub struct LocalCache;

returner_sdk::export_returner!(LocalCache);

fn cache() -> JobCache {
    JobCache::new(fs::root())
}

impl Returner for LocalCache {
    fn returner(ret: JobReturn) -> Result<()> {
        match cache().store_return(&ret, SystemTime::now())? {
            ReturnOutcome::Stored { .. } | ReturnOutcome::NoCache { .. } => {}
            ReturnOutcome::Duplicate { jid } => log::warn(&format!(
                "An extra return was detected from minion {} for job {jid}, please verify \
                 the minion, this could be a replay attack; the return was dropped",
                ret.id
            )),
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
        let keep = keep_jobs(
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

/// How long jobs are kept, `None` for ever: Salt's `get_keep_jobs_seconds`,
/// where a non-default legacy `keep_jobs` (hours) applies only while
/// `keep_jobs_seconds` is at its default.
fn keep_jobs(keep_jobs_seconds: Option<u64>, keep_jobs_hours: Option<u64>) -> Option<Duration> {
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
}
