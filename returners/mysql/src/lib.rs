//! Salt's `mysql` returner as a returner-host guest: job returns, loads and
//! events in the `jids`, `salt_returns` and `salt_events` tables, written
//! exactly as Salt's own returner writes them (same columns, JSON as
//! Python's `json.dumps` writes it), through the host's MySQL capability.
//! Every value travels as a bound parameter. See the README for the schema,
//! the grant it needs and where it deviates from Salt.
//!
//! Options (`options = { ... }` in the host config):
//! - `master_id` (default `""`): stored with each event (Salt: the master's `id`).
//! - `keep_jobs_seconds` (default 86400; `0` keeps every job) and Salt's
//!   legacy `keep_jobs` (hours): how old `clean_old_jobs` lets rows get.
//! - `archive_jobs` (default false): `clean_old_jobs` first copies old rows
//!   to `<table>_archive`, creating those tables like the originals.

mod pyjson;

use std::collections::HashMap;
use std::time::SystemTime;

use returner_sdk::mysql::{self, MAX_TRANSACTION_STATEMENTS, Statement, Value as Sql};
use returner_sdk::{Error, Event, JobReturn, Result, Returner, Value, config, log};

use returner_sdk::salt;

use crate::pyjson::{dumps, dumps_with_member};

/// MySQL's code for a duplicate key, which `save_load` ignores as Salt does.
const ER_DUP_ENTRY: &str = "MySQL error 1062 ";
/// Times a batch is looked up and inserted again after another writer
/// stored one of its returns in between (a duplicate key, with the unique
/// key of `schema-several-hosts.sql`).
const DUPLICATE_RETRIES: usize = 5;
/// The three tables Salt's returner writes, in the order it archives them.
const TABLES: [&str; 3] = ["jids", "salt_returns", "salt_events"];
/// The INSERTs of `event_return` and `returner` up to their VALUES: rows go
/// in multi-row statements ([`mysql::insert_rows`]).
const INSERT_EVENTS: &str = "INSERT INTO `salt_events` (`tag`, `data`, `master_id`)";
const INSERT_RETURNS: &str = "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`)";
/// Most returns one look-up for stored ones asks about: its WHERE has one
/// `(jid = ? AND id = ?)` per return, and stays far under the host's caps
/// on a statement's operators and depth.
const LOOKUP_RETURNS: usize = 64;

/// The `mysql` returner.
pub struct MysqlReturner;

returner_sdk::export_returner!(MysqlReturner, batch);

impl MysqlReturner {
    /// A minion returning a job it ran on its own asks for a jid (`req`):
    /// Salt allocates one and saves the return as the job's load.
    fn with_jid(mut ret: JobReturn) -> Result<JobReturn> {
        if ret.jid == "req" {
            let nocache = ret.full.get("nocache").and_then(Value::as_bool).unwrap_or(false);
            ret.jid = Self::prep_jid(nocache, None)?;
            if let Some(full) = ret.full.as_object_mut() {
                full.insert("jid".into(), Value::String(ret.jid.clone()));
            }
            Self::save_load(&ret.jid, ret.full.clone(), None)?;
        }
        Ok(ret)
    }
}

/// A return as Salt's returner writes it into `salt_returns`.
#[derive(Clone)]
struct ReturnRow {
    fun: String,
    jid: String,
    ret: String,
    id: String,
    success: String,
    full_ret: String,
}

impl ReturnRow {
    fn new(ret: &JobReturn) -> Self {
        // The return is part of the whole return: written once, and its
        // column is that part. `ret.ret` is `full`'s `return` whenever
        // `full` has one (the SDK takes it from there).
        let (full_ret, member) = dumps_with_member(&ret.full, "return");
        let ret_text = member.map_or_else(|| dumps(&ret.ret), |part| full_ret[part].to_owned());
        ReturnRow {
            fun: ret.fun.clone(),
            jid: ret.jid.clone(),
            ret: ret_text,
            id: ret.id.clone(),
            success: success_column(ret.full.get("success")),
            full_ret,
        }
    }

    /// The row's values, in the order of [`INSERT_RETURNS`]' columns.
    fn values(self) -> Vec<Sql> {
        let Self { fun, jid, ret, id, success, full_ret } = self;
        [fun, jid, ret, id, success, full_ret].map(Sql::from).to_vec()
    }
}

/// `rows` in one transaction per [`MAX_TRANSACTION_STATEMENTS`] multi-row
/// INSERTs: in practice every row of a batch, or none.
fn insert_all(head: &str, rows: Vec<Vec<Sql>>) -> Result<()> {
    for statements in mysql::insert_rows(head, rows).chunks(MAX_TRANSACTION_STATEMENTS) {
        mysql::transaction(statements)?;
    }
    Ok(())
}

/// The rows of `rows` that are not in `salt_returns` yet, nor earlier in
/// `rows`: the host delivers at least once, and a return delivered again
/// must not add a second row. A minion that returns a job again with another
/// payload still gets a second row, as in Salt.
///
/// The look-up is a plain (non-locking) read before the insert. Doing it in
/// the insert (`INSERT ... SELECT ... WHERE NOT EXISTS`) would close the
/// window in which two deliveries of one return racing each other both
/// insert it, but InnoDB's next-key locks on the jid's range of the index
/// then make concurrent returns of one job from different minions (Salt's
/// everyday traffic) deadlock each other.
fn not_stored(rows: Vec<ReturnRow>) -> Result<Vec<ReturnRow>> {
    // By job and minion, the whole returns stored: a return is hashed by
    // its two ids only, and compared whole only with those of its minion.
    let mut seen: HashMap<(String, String), Vec<String>> = HashMap::new();
    for chunk in rows.chunks(LOOKUP_RETURNS) {
        let wanted = vec!["(`jid` = ? AND `id` = ?)"; chunk.len()].join(" OR ");
        let params: Vec<Sql> = chunk.iter().flat_map(|row| [row.jid.as_str().into(), row.id.as_str().into()]).collect();
        let stored = mysql::query(&format!("SELECT `jid`, `id`, `full_ret` FROM `salt_returns` WHERE {wanted}"), &params)?;
        for row in &stored.rows {
            let [jid, id, full_ret] = row.as_slice() else { return Err(shape("returner")) };
            seen.entry((text_column(jid, "salt_returns.jid")?, text_column(id, "salt_returns.id")?))
                .or_default()
                .push(text_column(full_ret, "salt_returns.full_ret")?);
        }
    }
    Ok(rows
        .into_iter()
        .filter(|row| {
            let stored = seen.entry((row.jid.clone(), row.id.clone())).or_default();
            if stored.contains(&row.full_ret) {
                log::debug(&format!("the return of minion {} for job {} is stored already; not stored again", row.id, row.jid));
                return false;
            }
            stored.push(row.full_ret.clone());
            true
        })
        .collect())
}

/// Whether `e` is MySQL's duplicate key error.
fn is_duplicate(e: &Error) -> bool {
    matches!(e, Error::Backend(message) | Error::Invalid(message) if message.starts_with(ER_DUP_ENTRY))
}

/// Store the rows of `rows` not stored yet. With a unique key on `salt_returns`
/// (`schema-several-hosts.sql`: several hosts storing the same jobs), another
/// host may store one of them between the look-up and the insert: the insert
/// then fails on the duplicate, and the rows are looked up and inserted again.
fn store_returns(rows: Vec<ReturnRow>) -> Result<()> {
    let mut attempt = 0;
    loop {
        let fresh = not_stored(rows.clone())?;
        match insert_all(INSERT_RETURNS, fresh.into_iter().map(ReturnRow::values).collect()) {
            Err(e) if is_duplicate(&e) && attempt < DUPLICATE_RETRIES => {
                attempt += 1;
                log::debug("another writer stored a return of this batch meanwhile; looking them up again");
            }
            // Stored by another writer, with another payload: the first return of a minion for a job wins.
            Err(e) if is_duplicate(&e) && rows.len() == 1 => {
                log::debug(&format!("minion {} already has a return for job {}; kept the first one", rows[0].id, rows[0].jid));
                return Ok(());
            }
            done => return done,
        }
    }
}

impl Returner for MysqlReturner {
    fn returner(ret: JobReturn) -> Result<()> {
        let ret = Self::with_jid(ret)?;
        store_returns(vec![ReturnRow::new(&ret)])
    }

    /// Each return's row as `returner` writes it, those not stored yet, in
    /// multi-row INSERTs in one transaction: every row of the batch or none.
    fn returner_batch(rets: Vec<JobReturn>) -> Result<()> {
        let mut rows = Vec::with_capacity(rets.len());
        for (i, ret) in rets.into_iter().enumerate() {
            let ret = Self::with_jid(ret).map_err(|e| e.context(format!("rets[{i}]")))?;
            rows.push(ReturnRow::new(&ret));
        }
        store_returns(rows)
    }

    fn save_load(jid: &str, load: Value, _minions: Option<Vec<String>>) -> Result<()> {
        match mysql::execute("INSERT INTO `jids` (`jid`, `load`) VALUES (?, ?)", &[jid.into(), dumps(&load).into()]) {
            Ok(_) => Ok(()),
            // Salt ignores the duplicate (salt#22171): the first load wins.
            Err(e) if is_duplicate(&e) => {
                log::debug(&format!("job {jid} already has a load; kept the first one"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn get_load(jid: &str) -> Result<Value> {
        let rows = mysql::query("SELECT `load` FROM `jids` WHERE `jid` = ?", &[jid.into()])?;
        match rows.rows.first().and_then(|row| row.first()) {
            Some(load) => json_column(load, "jids.load"),
            None => Ok(Value::Object(Default::default())),
        }
    }

    fn get_jid(jid: &str) -> Result<Value> {
        let rows = mysql::query("SELECT `id`, `full_ret` FROM `salt_returns` WHERE `jid` = ?", &[jid.into()])?;
        let mut returns = returner_sdk::serde_json::Map::new();
        for row in &rows.rows {
            let [id, full_ret] = row.as_slice() else { return Err(shape("get_jid")) };
            returns.insert(text_column(id, "salt_returns.id")?, json_column(full_ret, "salt_returns.full_ret")?);
        }
        Ok(Value::Object(returns))
    }

    fn get_fun(fun: &str) -> Result<Value> {
        let rows = mysql::query(
            "SELECT s.`id`, s.`jid`, s.`full_ret` FROM `salt_returns` s \
             JOIN (SELECT MAX(`jid`) AS jid, `id` FROM `salt_returns` WHERE `fun` = ? GROUP BY `id`) latest \
             ON s.`jid` = latest.jid AND s.`id` = latest.`id` WHERE s.`fun` = ?",
            &[fun.into(), fun.into()],
        )?;
        let mut returns = returner_sdk::serde_json::Map::new();
        for row in &rows.rows {
            let [id, _jid, full_ret] = row.as_slice() else { return Err(shape("get_fun")) };
            returns.insert(text_column(id, "salt_returns.id")?, json_column(full_ret, "salt_returns.full_ret")?);
        }
        Ok(Value::Object(returns))
    }

    fn get_jids() -> Result<Value> {
        let rows = mysql::query("SELECT DISTINCT `jid`, `load` FROM `jids`", &[])?;
        let mut jobs = returner_sdk::serde_json::Map::new();
        for row in &rows.rows {
            let [jid, load] = row.as_slice() else { return Err(shape("get_jids")) };
            let jid = text_column(jid, "jids.jid")?;
            let load = json_column(load, "jids.load")?;
            jobs.insert(jid.clone(), Value::Object(salt::format_jid_instance(&jid, &load)));
        }
        Ok(Value::Object(jobs))
    }

    fn get_jids_filter(count: u32, filter_find_job: bool) -> Result<Value> {
        let (filter, mut params): (&str, Vec<Sql>) = if filter_find_job {
            ("WHERE `load` NOT LIKE ?", vec![r#"%"fun": "saltutil.find_job"%"#.into()])
        } else {
            ("", Vec::new())
        };
        params.push(u64::from(count).into());
        let sql = format!(
            "SELECT * FROM (SELECT DISTINCT `jid`, `load` FROM `jids` {filter} ORDER BY `jid` DESC LIMIT ?) `tmp` ORDER BY `jid`"
        );
        let rows = mysql::query(&sql, &params)?;
        let mut jobs = Vec::with_capacity(rows.rows.len());
        for row in &rows.rows {
            let [jid, load] = row.as_slice() else { return Err(shape("get_jids_filter")) };
            let jid = text_column(jid, "jids.jid")?;
            let load = json_column(load, "jids.load")?;
            jobs.push(Value::Object(salt::format_jid_instance_ext(&jid, &load)));
        }
        Ok(Value::Array(jobs))
    }

    fn get_minions() -> Result<Vec<String>> {
        let rows = mysql::query("SELECT DISTINCT `id` FROM `salt_returns`", &[])?;
        rows.rows
            .iter()
            .map(|row| row.first().ok_or_else(|| shape("get_minions")).and_then(|id| text_column(id, "salt_returns.id")))
            .collect()
    }

    fn prep_jid(_nocache: bool, passed_jid: Option<String>) -> Result<String> {
        Ok(passed_jid.unwrap_or_else(|| salt::gen_jid(SystemTime::now())))
    }

    fn save_minions(_jid: &str, _minions: Vec<String>, _syndic_id: Option<String>) -> Result<()> {
        // Salt's returner has it and stores nothing ("included for API
        // consistency"); a master of syndics calls it for every job, and
        // Salt treats a missing save_minions as a broken job cache.
        Ok(())
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        let master_id = config::get_as::<String>("master_id")?.unwrap_or_default();
        // The batch's events in one transaction, as Salt commits them: all
        // of them or none.
        let rows = events.iter().map(|event| vec![event.tag.as_str().into(), dumps(&event.data).into(), master_id.as_str().into()]).collect();
        insert_all(INSERT_EVENTS, rows)
    }

    fn clean_old_jobs() -> Result<()> {
        let Some(keep) = salt::keep_jobs(config::get_as::<u64>("keep_jobs_seconds")?, config::get_as::<u64>("keep_jobs")?) else {
            return Ok(());
        };
        // The cut-off comes from the server's clock, as in Salt.
        let rows = mysql::query("SELECT DATE_SUB(NOW(), INTERVAL ? SECOND) AS stamp", &[keep.as_secs().into()])?;
        let stamp = rows.rows.first().and_then(|r| r.first()).ok_or_else(|| shape("clean_old_jobs"))?;
        let stamp = text_column(stamp, "stamp")?;
        let mut statements = Vec::new();
        if config::get_as::<bool>("archive_jobs")?.unwrap_or(false) {
            // DDL commits on its own in MySQL: the tables exist before the
            // transaction starts.
            for table in TABLES {
                mysql::execute(&format!("CREATE TABLE IF NOT EXISTS `{table}_archive` LIKE `{table}`"), &[])?;
            }
            statements.extend(archive_jobs(&stamp));
        }
        statements.extend(purge_jobs(&stamp));
        // The copies and the deletes in one transaction: a row is archived
        // and deleted, or neither.
        mysql::transaction(&statements)?;
        Ok(())
    }
}

/// Salt's `_archive_jobs`: copy what `purge_jobs` is about to delete.
fn archive_jobs(stamp: &str) -> Vec<Statement> {
    vec![
        Statement::new(
            "INSERT INTO `jids_archive` SELECT * FROM `jids` WHERE `jid` IN \
             (SELECT DISTINCT `jid` FROM `salt_returns` WHERE `alter_time` < ?)",
            vec![stamp.into()],
        ),
        Statement::new("INSERT INTO `salt_returns_archive` SELECT * FROM `salt_returns` WHERE `alter_time` < ?", vec![stamp.into()]),
        Statement::new("INSERT INTO `salt_events_archive` SELECT * FROM `salt_events` WHERE `alter_time` < ?", vec![stamp.into()]),
    ]
}

/// Salt's `_purge_jobs`: jobs with an old return, then old returns and events.
fn purge_jobs(stamp: &str) -> Vec<Statement> {
    vec![
        Statement::new(
            "DELETE FROM `jids` WHERE `jid` IN (SELECT DISTINCT `jid` FROM `salt_returns` WHERE `alter_time` < ?)",
            vec![stamp.into()],
        ),
        Statement::new("DELETE FROM `salt_returns` WHERE `alter_time` < ?", vec![stamp.into()]),
        Statement::new("DELETE FROM `salt_events` WHERE `alter_time` < ?", vec![stamp.into()]),
    ]
}

/// What Salt stores in `success`: the driver's rendering of `ret["success"]`
/// (`1`/`0` for a bool), `None` when the return has none.
fn success_column(success: Option<&Value>) -> String {
    match success {
        None | Some(Value::Null) => "None".into(),
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn text_column(value: &Sql, column: &str) -> Result<String> {
    value.as_str().map(str::to_owned).ok_or_else(|| Error::Backend(format!("column {column} is not text: {value:?}")))
}

fn json_column(value: &Sql, column: &str) -> Result<Value> {
    let text = value.as_str().ok_or_else(|| Error::Backend(format!("column {column} is not text")))?;
    returner_sdk::serde_json::from_str(text).map_err(|e| Error::Backend(format!("column {column} is not JSON: {e}")))
}

fn shape(function: &str) -> Error {
    Error::Backend(format!("{function}: the query answered rows of an unexpected shape"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use returner_sdk::json;

    #[test]
    fn a_return_row_is_salts_row() {
        let full = json!({"id": "n1", "jid": "20261123084300320186", "fun": "test.ping", "return": true, "success": true});
        let ret = JobReturn {
            id: "n1".into(),
            jid: "20261123084300320186".into(),
            fun: "test.ping".into(),
            fun_args: json!([]),
            ret: json!(true),
            retcode: None,
            success: Some(true),
            full: full.clone(),
        };
        let insert = mysql::insert_rows(INSERT_RETURNS, vec![ReturnRow::new(&ret).values()]).remove(0);
        let params: Vec<&str> = insert.params.iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(params, ["test.ping", "20261123084300320186", "true", "n1", "1", &dumps(&full)]);
        assert_eq!(insert.sql, format!("{INSERT_RETURNS} VALUES (?, ?, ?, ?, ?, ?)"));
    }

    #[test]
    fn success_is_stored_as_salts_driver_renders_it() {
        assert_eq!(success_column(Some(&json!(true))), "1");
        assert_eq!(success_column(Some(&json!(false))), "0");
        assert_eq!(success_column(None), "None");
        assert_eq!(success_column(Some(&json!("yes"))), "yes");
    }

}
