//! Salt's `etcd_return` as a returner-host guest: job returns, loads,
//! minions, events and end times in etcd under the granted root (Salt's
//! `etcd.returner_root`), with Salt's key layout and JSON values as
//! `salt.utils.json.dumps` writes them. See the README for the layout and
//! where it deviates from Salt and why.
//!
//! Options (`options = { ... }` in the host config):
//! - `ttl` (or Salt's `etcd.ttl`): seconds every key written lives; one
//!   lease per call (a batch of returns is one call). Absent: keys live
//!   until deleted.

mod layout;

use std::collections::{BTreeSet, HashSet};
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
/// Bytes of keys and values a batch puts in one transaction, under etcd's
/// default `--max-request-bytes` of 1.5 MiB with room for the request's own
/// framing. One return larger than this still goes in one transaction of
/// its own, as `returner` writes it.
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// The `etcd` returner.
pub struct EtcdReturn;

returner_sdk::export_returner!(EtcdReturn, batch);

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

/// The keys Salt's `etcd_return` writes for one return: `minions/<id>` (the
/// jid itself, not its JSON) and `jobs/<jid>/<id>/<field>` per field of
/// the return.
fn return_items(ret: &JobReturn) -> Result<Vec<etcd::KeyValue>> {
    check_jid("jid", &ret.jid)?;
    check_minion_id("id", &ret.id)?;
    let Value::Object(fields) = &ret.full else {
        return Err(Error::invalid("ret", "expected a JSON object"));
    };
    let mut items = Vec::with_capacity(fields.len() + 1);
    items.push(kv(format!("minions/{}", ret.id), ret.jid.as_bytes()));
    for (field, value) in fields {
        items.push(kv(format!("jobs/{}/{}/{field}", ret.jid, ret.id), json_dumps(value)));
    }
    Ok(items)
}

/// The transactions that leave what writing each return's items in turn
/// leaves. A key several returns write is written once, with the value of
/// the last of them (one transaction may not put a key twice, and the
/// last write is the one that would stay). The returns are packed in order,
/// whole, into transactions of at most [`MAX_TXN_OPS`] keys and
/// [`MAX_TXN_BYTES`] bytes, so a reader never sees part of a return; one
/// return over either bound gets a transaction of its own.
fn pack(mut per_return: Vec<Vec<etcd::KeyValue>>) -> Vec<Vec<etcd::KeyValue>> {
    let mut seen = HashSet::new();
    for items in per_return.iter_mut().rev() {
        items.retain(|item| seen.insert(item.key.clone()));
    }
    let size = |items: &[etcd::KeyValue]| items.iter().map(|item| item.key.len() + item.value.len()).sum::<usize>();
    let mut txns: Vec<Vec<etcd::KeyValue>> = Vec::new();
    let mut bytes = 0;
    for items in per_return.into_iter().filter(|items| !items.is_empty()) {
        let item_bytes = size(&items);
        match txns.last_mut() {
            Some(txn) if txn.len() + items.len() <= MAX_TXN_OPS && bytes + item_bytes <= MAX_TXN_BYTES => {
                txn.extend(items);
                bytes += item_bytes;
            }
            _ => {
                txns.push(items);
                bytes = item_bytes;
            }
        }
    }
    txns
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
        etcd::put_many(&return_items(&ret)?, ttl()?)
    }

    /// The keys `returner` would write for each, in as few transactions as
    /// etcd takes, under the call's one lease. Every return is checked
    /// before anything is written. A redelivered return writes the same
    /// keys with the same values again.
    fn returner_batch(rets: Vec<JobReturn>) -> Result<()> {
        let per_return = rets
            .iter()
            .enumerate()
            .map(|(i, ret)| return_items(ret).map_err(|e| e.context(format!("rets[{i}]"))))
            .collect::<Result<Vec<_>>>()?;
        let ttl = ttl()?;
        // Sent together: etcd commits them in a few raft rounds, not one
        // each. Their order does not matter: no key is in two of them.
        etcd::put_batches(&pack(per_return), ttl)
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
        // Packed as a batch of returns is, each event its own item: a tag
        // several events have is written once, with the last one's data,
        // and the transactions go together.
        let txns = pack(events.iter().map(|event| vec![kv(event_key(&event.tag), json_dumps(&event.data))]).collect());
        if txns.is_empty() {
            return Ok(());
        }
        etcd::put_batches(&txns, ttl)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: &str) -> etcd::KeyValue {
        kv(key.to_owned(), value.as_bytes())
    }

    fn keys(txns: &[Vec<etcd::KeyValue>]) -> Vec<Vec<&str>> {
        txns.iter().map(|txn| txn.iter().map(|item| item.key.as_str()).collect()).collect()
    }

    #[test]
    fn a_key_several_returns_write_is_written_once_with_the_last_value() {
        let first = vec![item("minions/n1", "1"), item("jobs/1/n1/return", "true")];
        let second = vec![item("minions/n1", "2"), item("jobs/2/n1/return", "false")];
        let txns = pack(vec![first, second]);
        assert_eq!(keys(&txns), [["jobs/1/n1/return", "minions/n1", "jobs/2/n1/return"]]);
        assert_eq!(txns[0][1].value, b"2", "the later return's jid stays, as with two calls");
    }

    #[test]
    fn a_redelivered_return_in_the_same_batch_is_written_once() {
        let ret = vec![item("minions/n1", "1"), item("jobs/1/n1/return", "true")];
        let txns = pack(vec![ret.clone(), ret]);
        assert_eq!(keys(&txns), [["minions/n1", "jobs/1/n1/return"]]);
    }

    #[test]
    fn returns_are_packed_whole_under_the_op_and_byte_bounds() {
        let ret = |n: usize, keys: usize, bytes: usize| -> Vec<etcd::KeyValue> {
            (0..keys).map(|k| kv(format!("jobs/{n}/m/{k}"), vec![b'x'; bytes])).collect()
        };
        // 60 + 60 fit in 128; a third 60 does not.
        let txns = pack(vec![ret(1, 60, 1), ret(2, 60, 1), ret(3, 60, 1)]);
        assert_eq!(txns.iter().map(Vec::len).collect::<Vec<_>>(), [120, 60]);
        // 600 KiB + 600 KiB is over the byte bound.
        let txns = pack(vec![ret(1, 1, 600 * 1024), ret(2, 1, 600 * 1024), ret(3, 1, 1)]);
        assert_eq!(txns.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
        // One return over the op bound stays whole, alone.
        let txns = pack(vec![ret(1, 1, 1), ret(2, 200, 1), ret(3, 1, 1)]);
        assert_eq!(txns.iter().map(Vec::len).collect::<Vec<_>>(), [1, 200, 1]);
    }
}
