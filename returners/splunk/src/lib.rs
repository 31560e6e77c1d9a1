//! saltext-splunk's `splunk` returner as a returner-host guest: each job
//! return, and each event of `event_return`, is POSTed to Splunk's HTTP
//! Event Collector as the event of a HEC event, byte for byte as
//! saltext-splunk 1.0.0 sends it:
//!
//! ```text
//! {"time": "<epoch seconds>", "index": <index>, "sourcetype": <sourcetype>, "event": <the return>, "host": <host>}
//! ```
//!
//! The HEC token, the indexer and TLS are the host's: an `http` profile
//! with `headers = { Authorization = { file = ..., prefix = "Splunk " } }`,
//! granted `POST` on `/services/collector/event`. The returner never sees
//! the token. See the README for the config and the differences from
//! saltext-splunk.
//!
//! Options (`options = { ... }` in the host config; saltext-splunk's
//! `splunk_http_forwarder:` keys of the same names):
//! - `index`, `sourcetype`: sent as given (`""` when unset, as Salt does).
//! - `host`: the event's `host`; the minion id of the return (or `salt`
//!   for an event) when unset. saltext-splunk sends the hostname of the
//!   machine the returner runs on, which a sandboxed returner cannot know.
//! - `path`: the collector's path, `/services/collector/event` by default.
//!
//! Write-only, as saltext-splunk is: every read answers `unsupported`.
//! HEC's answer is checked (saltext-splunk ignores it): 5xx and 429 are
//! `backend` (the host keeps the return and delivers it again), other 4xx
//! `invalid` (a dead letter).

use std::time::{SystemTime, UNIX_EPOCH};

use returner_sdk::salt::json_dumps;
use returner_sdk::serde_json::Map;
use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, config, http, json};

/// The `splunk` returner.
pub struct Splunk;

returner_sdk::export_returner!(Splunk);

/// HEC's event endpoint, where saltext-splunk posts.
const DEFAULT_PATH: &str = "/services/collector/event";

/// Options that hold secrets or say where to connect belong to the host.
const HOST_SIDE: &[(&str, &str)] = &[
    ("token", "the HEC token goes in the http profile: headers = { Authorization = { file = ..., prefix = \"Splunk \" } }"),
    ("indexer", "the indexer is the http profile's base_url"),
    ("verify_ssl", "TLS is the http profile's: ca_file, and https:// in base_url"),
];

fn text_option(key: &str) -> Result<Option<String>> {
    config::get_as::<String>(key)
}

/// The HEC event around `event`, keys in saltext-splunk's order.
fn hec_event(event: Value, default_host: &str, now: u64) -> Result<String> {
    for (key, why) in HOST_SIDE {
        if config::get(key).is_some() {
            return Err(Error::invalid(&format!("option `{key}`"), why));
        }
    }
    let mut payload = Map::new();
    payload.insert("time".into(), json!(now.to_string()));
    payload.insert("index".into(), json!(text_option("index")?.unwrap_or_default()));
    payload.insert("sourcetype".into(), json!(text_option("sourcetype")?.unwrap_or_default()));
    payload.insert("event".into(), event);
    payload.insert("host".into(), json!(text_option("host")?.unwrap_or_else(|| default_host.to_owned())));
    Ok(json_dumps(&Value::Object(payload)))
}

/// Seconds since the epoch, truncated, as Python's `int(time.time())`.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn post(body: String) -> Result<()> {
    let path = text_option("path")?.unwrap_or_else(|| DEFAULT_PATH.to_owned());
    http::send(http::Method::Post, &path, &[], body.as_bytes())?.check()?;
    Ok(())
}

impl Returner for Splunk {
    fn returner(ret: JobReturn) -> Result<()> {
        post(hec_event(ret.full, &ret.id, now())?)
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        for event in events {
            // Salt's event dicts are {"data": ..., "tag": ...}.
            let mut e = Map::new();
            e.insert("data".into(), event.data);
            e.insert("tag".into(), json!(event.tag));
            post(hec_event(Value::Object(e), "salt", now())?)?;
        }
        Ok(())
    }
}
