//! The well-behaved fixture: every returner function succeeds and does
//! nothing, for benchmarks and as the good neighbour of hostile guests.
//! `get_fun("sleep:<ms>")` sleeps that long first, to hold a call in flight.
//! `get_jids` answers how many calls this instance has served, counting
//! itself: always 1 when every call gets a fresh instance.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, json};

struct Noop;

impl Returner for Noop {
    fn returner(_ret: JobReturn) -> Result<()> {
        Ok(())
    }

    fn save_load(_jid: &str, _load: Value, _minions: Option<Vec<String>>) -> Result<()> {
        Ok(())
    }

    fn get_load(_jid: &str) -> Result<Value> {
        Ok(json!({}))
    }

    fn get_jid(_jid: &str) -> Result<Value> {
        Ok(json!({}))
    }

    fn get_fun(fun: &str) -> Result<Value> {
        if let Some(millis) = fun.strip_prefix("sleep:") {
            let millis: u64 = millis.parse().map_err(|err| Error::invalid("fun", err))?;
            std::thread::sleep(Duration::from_millis(millis));
        }
        Ok(json!({}))
    }

    fn get_jids() -> Result<Value> {
        static CALLS: AtomicU32 = AtomicU32::new(0);
        Ok(json!({ "calls": CALLS.fetch_add(1, Ordering::Relaxed) + 1 }))
    }

    fn get_jids_filter(_count: u32, _filter_find_job: bool) -> Result<Value> {
        Ok(json!([]))
    }

    fn get_minions() -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn prep_jid(_nocache: bool, passed_jid: Option<String>) -> Result<String> {
        Ok(passed_jid.unwrap_or_else(|| "20000101000000000000".to_owned()))
    }

    fn save_minions(_jid: &str, _minions: Vec<String>, _syndic_id: Option<String>) -> Result<()> {
        Ok(())
    }

    fn clean_old_jobs() -> Result<()> {
        Ok(())
    }

    fn event_return(_events: Vec<Event>) -> Result<()> {
        Ok(())
    }

    fn update_endtime(_jid: &str, _time: String) -> Result<()> {
        Ok(())
    }

    fn get_endtime(_jid: &str) -> Result<Option<String>> {
        Ok(None)
    }
}

returner_sdk::export_returner!(Noop);
