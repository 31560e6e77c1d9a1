//! saltext-elasticsearch's `elasticsearch` returner as a returner-host
//! guest: each job return becomes a document of the index
//! `salt-<fun>` (an alias of `salt-<fun>-v1`, created on first use), byte
//! for byte the document saltext-elasticsearch 1.2.3 sends; events go to
//! the master event index. Not a job cache (see the README).
//!
//! The Elasticsearch URL, the credentials and TLS are the host's: an `http`
//! profile (`base_url`, `headers = { Authorization = ... }`, `ca_file`),
//! granted `HEAD`, `GET`, `PUT` and `POST` on `/*`, `/*/_alias/*`,
//! `/*/_doc` and `/*/_doc/*`. The returner sends paths relative to it and
//! never sees a secret. See the README for the config and the differences
//! from saltext-elasticsearch.
//!
//! Options (`options = { ... }` in the host config; saltext-elasticsearch's
//! option names; `null` or `""` mean the default, as in Salt):
//! - `functions_blacklist` (`[]`): returns of these functions are not sent.
//! - `index_date` (false): append `-YYYY.MM.DD` (UTC date) to indexes.
//! - `states_count`, `states_order_output`, `states_single_index` (false):
//!   for `state.apply`, `state.highstate` and `state.sls`, as
//!   elasticsearch9_mod does them.
//! - `number_of_shards` (1), `number_of_replicas` (0): settings of an index
//!   the returner creates.
//! - `master_event_index` (`salt-master-event-cache`).
//! - `document_id` (false): store a return under the id `<jid>_<minion>`
//!   (`PUT`), so a return delivered again overwrites its document rather
//!   than adding a second one; off, Elasticsearch assigns ids (`POST`).
//! - `debug_returner_payload` (false): log each document at debug level.
//!
//! Statuses: 5xx and 429 are `backend` (the host keeps the return and
//! delivers it again), other 4xx `invalid` (a dead letter), except those
//! the protocol expects: `HEAD` 404 (no index yet) and 400
//! `resource_already_exists_exception` on index creation (another writer
//! won the race).

pub mod document;


use returner_sdk::http::{self, Method};
use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, config, log};

use crate::document::{
    DocOptions, Timestamp, dated, event_body, event_id, index_settings, job_document, segment,
};

/// The `elasticsearch` returner.
pub struct Elasticsearch;

returner_sdk::export_returner!(Elasticsearch);

/// saltext-elasticsearch's default index of `event_return`.
const DEFAULT_EVENT_INDEX: &str = "salt-master-event-cache";

/// The header of every request with a body.
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// saltext-elasticsearch's connection options: the host's http profile
/// holds all of them.
const HOST_SIDE: &[(&str, &str)] = &[
    ("hosts", "the Elasticsearch URL is the http profile's base_url"),
    ("host", "the Elasticsearch URL is the http profile's base_url"),
    ("username", "credentials go in the http profile: headers = { Authorization = { file = ..., prefix = \"Basic \" } }"),
    ("password", "credentials go in the http profile: headers = { Authorization = { file = ..., prefix = \"Basic \" } }"),
    ("api_key", "the API key goes in the http profile: headers = { Authorization = { file = ..., prefix = \"ApiKey \" } }"),
    ("ca_certs", "TLS is the http profile's: ca_file, and https:// in base_url"),
    ("verify_certs", "TLS is the http profile's: ca_file, and https:// in base_url (certificates are always verified)"),
    ("proxies", "the http profile says where requests go; a returner has no proxy"),
    ("timeout", "the timeout is the http profile's timeout_ms"),
];

/// Refuse the options that belong to the host's http profile.
fn check_host_side() -> Result<()> {
    for (key, why) in HOST_SIDE {
        if config::get(key).is_some() {
            return Err(Error::invalid(&format!("option `{key}`"), why));
        }
    }
    Ok(())
}

/// Whether option `key` has a value: Salt's `get_returner_options` takes
/// `None` and `""` for the default.
fn is_set(key: &str) -> bool {
    match config::get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn flag(key: &str) -> Result<bool> {
    Ok(if is_set(key) { config::get_as::<bool>(key)?.unwrap_or(false) } else { false })
}

fn number(key: &str, default: u32) -> Result<u32> {
    Ok(if is_set(key) { config::get_as::<u32>(key)?.unwrap_or(default) } else { default })
}

fn text(key: &str, default: &str) -> Result<String> {
    Ok(if is_set(key) { config::get_as::<String>(key)?.unwrap_or_default() } else { default.to_owned() })
}

fn doc_options() -> Result<DocOptions> {
    Ok(DocOptions {
        index_date: flag("index_date")?,
        states_count: flag("states_count")?,
        states_order_output: flag("states_order_output")?,
        states_single_index: flag("states_single_index")?,
    })
}

/// Whether a 400 says the index exists already: another writer created it
/// between our `HEAD` and our `PUT`.
fn already_exists(body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    body.contains("resource_already_exists_exception") || body.contains("index_already_exists_exception")
}

/// saltext-elasticsearch's `_ensure_index`: when `HEAD /<index>` says 404,
/// create `<index>-v1` with the shard and replica options and make
/// `<index>` its alias.
fn ensure_index(index: &str) -> Result<()> {
    let alias = segment("index", index)?;
    let concrete = segment("index", &format!("{index}-v1"))?;
    let head = http::send(Method::Head, &format!("/{alias}"), &[], &[])?;
    if head.status != 404 {
        head.check()?;
        return Ok(());
    }
    let settings = index_settings(number("number_of_shards", 1)?, number("number_of_replicas", 0)?);
    let created = http::send(Method::Put, &format!("/{concrete}"), &[JSON], settings.as_bytes())?;
    if created.status == 400 && already_exists(&created.body) {
        log::debug(&format!("elasticsearch: index {index}-v1 was created concurrently"));
    } else {
        created.check()?;
    }
    http::send(Method::Put, &format!("/{concrete}/_alias/{alias}"), &[], &[])?.check()?;
    Ok(())
}

impl Returner for Elasticsearch {
    fn returner(ret: JobReturn) -> Result<()> {
        check_host_side()?;
        let blacklist: Vec<String> = if is_set("functions_blacklist") {
            config::get_as("functions_blacklist")?.unwrap_or_default()
        } else {
            Vec::new()
        };
        if blacklist.contains(&ret.fun) {
            log::debug(&format!(
                "Won't push new data to Elasticsearch, job with jid={} and function={} which is in the user-defined list of ignored functions",
                ret.jid, ret.fun
            ));
            return Ok(());
        }
        let Some(doc) = job_document(&ret, &doc_options()?, Timestamp::now()) else {
            log::debug(&format!("Won't push new data to Elasticsearch, job with jid={} was not successful", ret.jid));
            return Ok(());
        };
        let index = segment("index", &doc.index)?;
        let (method, path) = if flag("document_id")? {
            let id = segment("document id", &format!("{}_{}", ret.jid, ret.id))?;
            (Method::Put, format!("/{index}/_doc/{id}"))
        } else {
            (Method::Post, format!("/{index}/_doc"))
        };
        if flag("debug_returner_payload")? {
            log::debug(&format!("elasticsearch payload: {}", doc.body));
        }
        ensure_index(&doc.index)?;
        http::send(method, &path, &[JSON], doc.body.as_bytes())?.check()?;
        Ok(())
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        check_host_side()?;
        if events.is_empty() {
            return Ok(());
        }
        let index = dated(&text("master_event_index", DEFAULT_EVENT_INDEX)?, flag("index_date")?, Timestamp::now());
        let alias = segment("index", &index)?;
        ensure_index(&index)?;
        for event in events {
            let id = event_id(&event.tag, &event.data);
            let body = event_body(&event.tag, &event.data);
            http::send(Method::Put, &format!("/{alias}/_doc/{id}"), &[JSON], body.as_bytes())?.check()?;
        }
        Ok(())
    }
}
