//! A returner built against `salt:returner@0.1.2` (the frozen copy in
//! `wit/`), without the SDK, which follows the current WIT: a host of a
//! later 0.1.x must load it and serve it. `returner` logs and succeeds;
//! `get_load` answers the returner's options; the rest is `unsupported`.

wit_bindgen::generate!({ path: "wit", world: "old-guest" });

use exports::salt::returner::returner::{Error, Event, Guest, JobReturn, Json};
use salt::returner::{config, log};

struct Old;

fn unsupported<T>(function: &str) -> Result<T, Error> {
    Err(Error::Unsupported(format!("{function} is not implemented by this 0.1.2 fixture")))
}

impl Guest for Old {
    fn returner(ret: JobReturn) -> Result<(), Error> {
        log::log(log::Level::Info, &format!("0.1.2 guest stored {} of {}", ret.jid, ret.id));
        Ok(())
    }
    fn save_load(_jid: String, _load: Json, _minions: Option<Vec<String>>) -> Result<(), Error> {
        unsupported("save_load")
    }
    fn get_load(_jid: String) -> Result<Json, Error> {
        Ok(config::get_all())
    }
    fn get_jid(_jid: String) -> Result<Json, Error> {
        unsupported("get_jid")
    }
    fn get_fun(_fun: String) -> Result<Json, Error> {
        unsupported("get_fun")
    }
    fn get_jids() -> Result<Json, Error> {
        unsupported("get_jids")
    }
    fn get_jids_filter(_count: u32, _filter_find_job: bool) -> Result<Json, Error> {
        unsupported("get_jids_filter")
    }
    fn get_minions() -> Result<Vec<String>, Error> {
        unsupported("get_minions")
    }
    fn prep_jid(_nocache: bool, _passed_jid: Option<String>) -> Result<String, Error> {
        unsupported("prep_jid")
    }
    fn save_minions(_jid: String, _minions: Vec<String>, _syndic_id: Option<String>) -> Result<(), Error> {
        unsupported("save_minions")
    }
    fn clean_old_jobs() -> Result<(), Error> {
        unsupported("clean_old_jobs")
    }
    fn event_return(_events: Vec<Event>) -> Result<(), Error> {
        unsupported("event_return")
    }
    fn update_endtime(_jid: String, _time: String) -> Result<(), Error> {
        unsupported("update_endtime")
    }
    fn get_endtime(_jid: String) -> Result<Option<String>, Error> {
        unsupported("get_endtime")
    }
}

export!(Old);
