//! The `Returner` trait a returner implements, and the values it receives.

use serde_json::Value;

use crate::error::{Error, Result};

/// One job return, as a minion hands it to `returner` (or the master, on
/// behalf of a minion, when the returner is the master job cache).
#[derive(Debug, Clone, PartialEq)]
pub struct JobReturn {
    /// Minion id (`id`).
    pub id: String,
    /// Job id (`jid`); `req` asks the returner to allocate one.
    pub jid: String,
    /// Function name (`fun`), e.g. `test.ping`.
    pub fun: String,
    /// The function's arguments (`fun_args`), `[]` when absent.
    pub fun_args: Value,
    /// The function's return value: `full`'s `return` (Salt's key), `null` when absent.
    pub ret: Value,
    /// Exit code (`retcode`), when the return carried one.
    pub retcode: Option<i64>,
    /// Whether the function succeeded (`success`), when the return said.
    pub success: Option<bool>,
    /// The whole return object exactly as Salt sent it (`out`, `user`, ... live here).
    pub full: Value,
}

/// One event of the Salt event bus, as `event_return` receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event tag, e.g. `salt/job/20261123084332485602/ret/n1`.
    pub tag: String,
    /// The event data.
    pub data: Value,
}

/// A Salt returner: one associated function per function of Salt's returner
/// interface, named and typed like Salt's Python ones.
///
/// There is no `self`: the host runs every call in a fresh instance, so a
/// returner keeps nothing between calls except what it stores through its
/// grants. Every function defaults to [`Error::Unsupported`], which the host
/// reports the way Salt's loader reports a missing function; implement the
/// ones the returner supports.
pub trait Returner {
    /// Store one job return (Salt's `returner(ret)`).
    fn returner(ret: JobReturn) -> Result<()> {
        let _ = ret;
        Err(Error::unsupported("returner"))
    }

    /// Store consecutive job returns, in order, in one call. The host calls
    /// it only when the returner is exported with
    /// `export_returner!(Type, batch)`.
    ///
    /// `Ok` means every one is stored. After an error the host may deliver
    /// any of them again, those already stored included, so storing a
    /// return twice must be harmless. The error's kind means what it means
    /// for [`Returner::returner`]: [`Error::Backend`] is retried later;
    /// [`Error::Invalid`], [`Error::Denied`] and [`Error::Unsupported`]
    /// never succeed, and the host splits the batch to find the return that
    /// fails.
    ///
    /// The default stores them one [`Returner::returner`] at a time and
    /// stops at the first error; override it to store them together (one
    /// transaction, one write).
    fn returner_batch(rets: Vec<JobReturn>) -> Result<()> {
        for ret in rets {
            Self::returner(ret)?;
        }
        Ok(())
    }

    /// Store the load (publish data) of a job. First write wins: a later call
    /// for the same jid must leave the stored load unchanged.
    fn save_load(jid: &str, load: Value, minions: Option<Vec<String>>) -> Result<()> {
        let _ = (jid, load, minions);
        Err(Error::unsupported("save_load"))
    }

    /// The load of a job as a JSON object; `{}` when the jid is unknown.
    fn get_load(jid: &str) -> Result<Value> {
        let _ = jid;
        Err(Error::unsupported("get_load"))
    }

    /// Every minion's return of a job: `{minion_id: {"return": ..., ...}}`.
    fn get_jid(jid: &str) -> Result<Value> {
        let _ = jid;
        Err(Error::unsupported("get_jid"))
    }

    /// Each minion's latest return of a function: `{minion_id: return}`.
    fn get_fun(fun: &str) -> Result<Value> {
        let _ = fun;
        Err(Error::unsupported("get_fun"))
    }

    /// All jobs: `{jid: {"Function", "Arguments", "Target", "Target-type", "User", "StartTime"}}`.
    fn get_jids() -> Result<Value> {
        Err(Error::unsupported("get_jids"))
    }

    /// The newest `count` jobs, oldest first: a JSON array of job objects
    /// with a `JID` key; skips `saltutil.find_job` when `filter_find_job`.
    fn get_jids_filter(count: u32, filter_find_job: bool) -> Result<Value> {
        let _ = (count, filter_find_job);
        Err(Error::unsupported("get_jids_filter"))
    }

    /// Ids of the minions that have returned.
    fn get_minions() -> Result<Vec<String>> {
        Err(Error::unsupported("get_minions"))
    }

    /// Allocate a job id, or adopt `passed_jid`; idempotent for the same passed jid.
    fn prep_jid(nocache: bool, passed_jid: Option<String>) -> Result<String> {
        let _ = (nocache, passed_jid);
        Err(Error::unsupported("prep_jid"))
    }

    /// Record which minions a job targeted (per syndic when `syndic_id` is set).
    fn save_minions(jid: &str, minions: Vec<String>, syndic_id: Option<String>) -> Result<()> {
        let _ = (jid, minions, syndic_id);
        Err(Error::unsupported("save_minions"))
    }

    /// Remove jobs older than the returner's retention setting.
    fn clean_old_jobs() -> Result<()> {
        Err(Error::unsupported("clean_old_jobs"))
    }

    /// Store a batch of events from the Salt event bus.
    fn event_return(events: Vec<Event>) -> Result<()> {
        let _ = events;
        Err(Error::unsupported("event_return"))
    }

    /// Record when a job ended.
    fn update_endtime(jid: &str, time: String) -> Result<()> {
        let _ = (jid, time);
        Err(Error::unsupported("update_endtime"))
    }

    /// When a job ended; `None` when unknown.
    fn get_endtime(jid: &str) -> Result<Option<String>> {
        let _ = jid;
        Err(Error::unsupported("get_endtime"))
    }
}
