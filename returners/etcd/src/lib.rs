//! Salt's `etcd_return` as a returner-host guest: job returns, loads,
//! minions, events and end times in etcd under the granted root (Salt's
//! `etcd.returner_root`), with Salt's key layout and JSON values as
//! `salt.utils.json.dumps` writes them. See the README for the layout and
//! where it deviates from Salt and why.
//!
//! Options (`options = { ... }` in the host config):
//! - `ttl` (or Salt's `etcd.ttl`): seconds every key written lives; one
//!   lease per call. Absent: keys live until deleted.

mod layout;

use std::collections::BTreeSet;
use std::time::SystemTime;

use returner_sdk::salt::{format_jid_instance, format_jid_instance_ext, gen_jid, json_dumps, newest};
use returner_sdk::serde_json::{self, Map};
use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, config, etcd, log};

use crate::layout::{check_jid, check_minion_id, event_key};

/// The most keys one range read asks for. Bounds a read of a huge tree;
/// the guest's memory cap is the other bound.
const RANGE_LIMIT: u32 = 1_000_000;
/// etcd's default `--max-txn-ops`: the most writes in one transaction.
const MAX_TXN_OPS: usize = 128;

/// The `etcd` returner.
pub struct EtcdReturn;

returner_sdk::export_returner!(EtcdReturn);

/// The lease every write of a call gets, from the `ttl` option.
fn ttl() -> Result<Option<u32>> {
    match config::get_as::<u32>("ttl")? {
        Some(ttl) => Ok(Some(ttl)),
        None => config::get_as::<u32>("etcd.ttl"),
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn kv(key: String, value: impl Into<Vec<u8>>) -> etcd::KeyValue {
    etcd::KeyValue { key, value: value.into() }
}

/// Every job's load, by jid, from the `.load.p` keys under `jobs/`.
fn loads() -> Result<Vec<(String, Value)>> {
    let mut loads = Vec::new();
    for entry in etcd::get_prefix("jobs/", RANGE_LIMIT)? {
        if let Some(jid) = entry.key.strip_prefix("jobs/").and_then(|rest| rest.strip_suffix("/.load.p"))
            && !jid.contains('/')
        {
            loads.push((jid.to_owned(), parse(&entry.value)));
        }
    }
    Ok(loads)
}

impl Returner for EtcdReturn {
    fn returner(ret: JobReturn) -> Result<()> {
        check_jid("jid", &ret.jid)?;
        check_minion_id("id", &ret.id)?;
        let Value::Object(fields) = &ret.full else {
            return Err(Error::invalid("ret", "expected a JSON object"));
        };
        let mut items = Vec::with_capacity(fields.len() + 1);
        // Salt writes the jid itself, not its JSON, here.
        items.push(kv(format!("minions/{}", ret.id), ret.jid.as_bytes()));
        for (field, value) in fields {
            items.push(kv(format!("jobs/{}/{}/{field}", ret.jid, ret.id), json_dumps(value)));
        }
        etcd::put_many(&items, ttl()?)
    }

    fn save_load(jid: &str, load: Value, minions: Option<Vec<String>>) -> Result<()> {
        check_jid("jid", jid)?;
        if !etcd::put_if_absent(&format!("jobs/{jid}/.load.p"), json_dumps(&load).as_bytes(), ttl()?)? {
            log::debug(&format!("job {jid} already has a load; kept the first one"));
        }
        if let Some(minions) = minions {
            Self::save_minions(jid, minions, None)?;
        }
        Ok(())
    }

    fn get_load(jid: &str) -> Result<Value> {
        check_jid("jid", jid)?;
        let Some(bytes) = etcd::get(&format!("jobs/{jid}/.load.p"))? else {
            return Ok(Value::Object(Map::new()));
        };
        let mut load = parse(&bytes);
        let mut minions = BTreeSet::new();
        for entry in etcd::get_prefix(&format!("job_minions/{jid}/"), RANGE_LIMIT)? {
            if let Value::Array(ids) = parse(&entry.value) {
                minions.extend(ids.into_iter().filter_map(|id| id.as_str().map(str::to_owned)));
            }
        }
        if let (Value::Object(map), false) = (&mut load, minions.is_empty()) {
            map.insert("Minions".into(), minions.into_iter().map(Value::String).collect());
        }
        Ok(load)
    }

    fn get_jid(jid: &str) -> Result<Value> {
        check_jid("jid", jid)?;
        let prefix = format!("jobs/{jid}/");
        let mut minions = Map::new();
        for entry in etcd::get_prefix(&prefix, RANGE_LIMIT)? {
            let Some((id, field)) = entry.key.strip_prefix(&prefix).and_then(|rest| rest.split_once('/')) else {
                continue;
            };
            if field == "return" && !id.starts_with('.') {
                let mut ret = Map::new();
                ret.insert("return".into(), parse(&entry.value));
                minions.insert(id.to_owned(), Value::Object(ret));
            }
        }
        Ok(Value::Object(minions))
    }

    fn get_fun(fun: &str) -> Result<Value> {
        let mut found = Map::new();
        for entry in etcd::get_prefix("minions/", RANGE_LIMIT)? {
            let id = entry.key.trim_start_matches("minions/");
            let jid = String::from_utf8_lossy(&entry.value);
            if check_jid("jid", &jid).is_err() || check_minion_id("id", id).is_err() {
                continue;
            }
            if let Some(bytes) = etcd::get(&format!("jobs/{jid}/{id}/fun"))?
                && parse(&bytes) == fun
            {
                found.insert(id.to_owned(), Value::String(fun.to_owned()));
            }
        }
        Ok(Value::Object(found))
    }

    fn get_jids() -> Result<Value> {
        let jobs = loads()?
            .into_iter()
            .map(|(jid, load)| {
                let summary = Value::Object(format_jid_instance(&jid, &load));
                (jid, summary)
            })
            .collect();
        Ok(Value::Object(jobs))
    }

    fn get_jids_filter(count: u32, filter_find_job: bool) -> Result<Value> {
        let mut summaries = Vec::new();
        for (jid, load) in loads()? {
            let summary = format_jid_instance_ext(&jid, &load);
            let find_job = summary.get("Function").is_some_and(|f| f == "saltutil.find_job");
            if !(filter_find_job && find_job) {
                summaries.push((jid, Value::Object(summary)));
            }
        }
        Ok(Value::Array(newest(summaries, usize::try_from(count).unwrap_or(usize::MAX))))
    }

    fn get_minions() -> Result<Vec<String>> {
        let entries = etcd::get_prefix("minions/", RANGE_LIMIT)?;
        Ok(entries.into_iter().map(|e| e.key.trim_start_matches("minions/").to_owned()).collect())
    }

    fn prep_jid(_nocache: bool, passed_jid: Option<String>) -> Result<String> {
        Ok(passed_jid.unwrap_or_else(|| gen_jid(SystemTime::now())))
    }

    fn save_minions(jid: &str, minions: Vec<String>, syndic_id: Option<String>) -> Result<()> {
        check_jid("jid", jid)?;
        let name = match &syndic_id {
            Some(syndic) => {
                check_minion_id("syndic_id", syndic)?;
                format!(".minions.{syndic}.p")
            }
            None => ".minions.p".to_owned(),
        };
        let list = Value::Array(minions.into_iter().map(Value::String).collect());
        etcd::put(&format!("job_minions/{jid}/{name}"), json_dumps(&list).as_bytes(), ttl()?)
    }

    fn clean_old_jobs() -> Result<()> {
        // Expiry is etcd's: every key is written under the `ttl` lease.
        Ok(())
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        let ttl = ttl()?;
        // One transaction writes a key once: the last event of a tag wins.
        let mut latest = Map::new();
        for event in events {
            latest.insert(event_key(&event.tag), Value::String(json_dumps(&event.data)));
        }
        let items: Vec<etcd::KeyValue> = latest
            .into_iter()
            .map(|(key, data)| kv(key, data.as_str().unwrap_or_default().as_bytes()))
            .collect();
        for batch in items.chunks(MAX_TXN_OPS) {
            etcd::put_many(batch, ttl)?;
        }
        Ok(())
    }

    fn update_endtime(jid: &str, time: String) -> Result<()> {
        check_jid("jid", jid)?;
        etcd::put(&format!("endtimes/{jid}"), json_dumps(&Value::String(time)).as_bytes(), ttl()?)
    }

    fn get_endtime(jid: &str) -> Result<Option<String>> {
        check_jid("jid", jid)?;
        Ok(etcd::get(&format!("endtimes/{jid}"))?.map(|bytes| match parse(&bytes) {
            Value::String(time) => time,
            other => other.to_string(),
        }))
    }
}
