//! The WIT functions of `salt:returner/mysql`. The grant check is the first
//! statement of each; only a statement that passed it reaches the backend.

use std::collections::HashMap;
use std::sync::Arc;

use super::checker::{self, Unchecked};
use super::sql::{self, Access, Denial, Function, Refusal};
use super::{Granted, Held, MysqlCtx, SqlClient, SqlSession};
use crate::bindings::GuestError;
use crate::bindings::salt::returner::mysql::{ExecResult, Host, Rows, Statement, Value};
use crate::caps::audit;
use crate::metrics::metrics;

/// Most statements in one transaction. Stops a guest from holding a
/// connection and its row locks for an unbounded batch, and bounds the
/// checking the host does before anything runs.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1000;

/// Most bytes of distinct SQL text in one transaction (a statement repeated
/// with other parameters counts once). Bounds the time the check of one
/// transaction takes: about 150 ms of a checker thread at this size.
pub const MAX_TRANSACTION_SQL_BYTES: usize = 1024 * 1024;

/// A check's outcome for each statement, or the refusal and its index.
type Checked = Result<Vec<String>, (Refusal, Option<usize>)>;

impl MysqlCtx {
    /// The returner's grant and the profile's client, or the guest's error.
    fn granted(&self, function: Function, target: impl FnOnce() -> String) -> Result<(Arc<Granted>, Arc<dyn SqlClient>), GuestError> {
        match (&self.granted, &self.client) {
            // Admin's choice: no grant at all.
            (None, _) => Err(self.deny(function.as_str(), Denial { target: target(), reason: "it has no mysql grant".into() })),
            (Some(g), Some(c)) => Ok((g.clone(), c.clone())),
            // Host bug: config validation guarantees the profile exists.
            (Some(g), None) => Err(GuestError::Backend(format!("MySQL profile `{}` has no pool in this host", g.grant.profile))),
        }
    }

    /// Check `statements` for `function`: the texts to send, in order, or
    /// the guest's error (a denial audited once). Texts this grant passed
    /// before are not checked again; the others are checked on a checker
    /// thread, each distinct text once (a batch repeats one INSERT with
    /// different parameters).
    async fn check(&self, function: Function, statements: Vec<String>) -> Result<(Vec<String>, Arc<dyn SqlClient>), GuestError> {
        let (granted, client) = self.granted(function, || statements.first().map_or_else(String::new, |s| target_of(s)))?;
        let known: Option<Vec<String>> = statements.iter().map(|sql| granted.checked(function, sql)).collect();
        if let Some(sent) = known {
            return Ok((sent, client));
        }
        let database = client.database().to_owned();
        let shared = granted.clone();
        let checked = checker::run(move |stopped| -> Checked {
            let access = Access { tables: &shared.grant.tables, database: &database };
            let mut distinct: HashMap<&str, String> = HashMap::new();
            let mut distinct_bytes = 0usize;
            let mut out = Vec::with_capacity(statements.len());
            for (i, sql) in statements.iter().enumerate() {
                if let Some(sent) = distinct.get(sql.as_str()) {
                    out.push(sent.clone());
                    continue;
                }
                if stopped() {
                    // The call ran out of time; nobody reads this answer.
                    return Ok(Vec::new());
                }
                distinct_bytes += sql.len();
                if distinct_bytes > MAX_TRANSACTION_SQL_BYTES {
                    let denial = Denial {
                        target: "transaction".into(),
                        reason: format!("the transaction's statements are over {MAX_TRANSACTION_SQL_BYTES} bytes of distinct SQL: split it"),
                    };
                    return Err((Refusal::Denied(denial), None));
                }
                let index = (function == Function::Transaction).then_some(i);
                let sent = sql::check(sql, function, access).map_err(|r| (r, index))?;
                shared.remember(function, sql, &sent);
                distinct.insert(sql, sent.clone());
                out.push(sent);
            }
            Ok(out)
        })
        .await;
        match checked {
            Ok(Ok(sent)) => Ok((sent, client)),
            // Guest's fault (or its author's): the statement is outside the grant.
            Ok(Err((refusal, index))) => Err(self.refused(function, refusal, index)),
            // Host's limit: other returners' checks fill the queue.
            Err(Unchecked::Busy) => Err(GuestError::Limit(format!(
                "mysql {}: the host's SQL checker is busy ({} checks queued); try again",
                function.as_str(),
                checker::QUEUE
            ))),
            // Host's fault: the parser failed on this text; refuse it.
            Err(Unchecked::Failed) => Err(self.deny(
                function.as_str(),
                Denial { target: "statement".into(), reason: "the statement could not be checked".into() },
            )),
        }
    }

    /// A refusal as the guest's error; `index` names a transaction's statement.
    fn refused(&self, function: Function, refusal: Refusal, index: Option<usize>) -> GuestError {
        let which = index.map_or_else(String::new, |i| format!("statement {}: ", i + 1));
        match refusal {
            Refusal::Denied(mut denial) => {
                denial.reason = format!("{which}{}", denial.reason);
                self.deny(function.as_str(), denial)
            }
            Refusal::Misplaced(message) => GuestError::Invalid(format!("mysql {}: {which}{message}", function.as_str())),
        }
    }

    /// `result`, with a failure in the backend counted.
    fn counted<T>(&self, result: Result<T, GuestError>) -> Result<T, GuestError> {
        if let Err(GuestError::Backend(_)) = &result {
            metrics().backend_error(&self.returner, "mysql");
        }
        result
    }

    fn deny(&self, op: &str, denial: Denial) -> GuestError {
        audit::denied(&self.returner, "mysql", op, &denial.target);
        GuestError::Denied(format!("mysql {op} denied for returner `{}`: {}", self.returner, denial.reason))
    }

    /// The call's session on its profile: made at its first statement,
    /// after one of the returner's connection slots, waited for until the
    /// call's deadline (one returner cannot hold the whole pool); both are
    /// held until the call ends, so its statements share one connection.
    async fn session(&mut self, function: Function, client: &Arc<dyn SqlClient>) -> Result<&mut dyn SqlSession, GuestError> {
        let held = match self.held.take() {
            Some(held) => held,
            None => {
                let slot = self.slot(function).await?;
                Held { session: client.session(), _slot: slot }
            }
        };
        Ok(&mut *self.held.insert(held).session)
    }

    /// One of the returner's connection slots on its profile, waited for
    /// until the call's deadline.
    async fn slot(&self, function: Function) -> Result<tokio::sync::OwnedSemaphorePermit, GuestError> {
        let Some(granted) = &self.granted else {
            // Host bug: a statement passed the check without a grant.
            return Err(GuestError::Backend("mysql: no grant".into()));
        };
        let wait = self.deadline().saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(wait, granted.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics().limited(&self.returner, "mysql_connections");
                Err(GuestError::Limit(format!(
                    "mysql {}: returner `{}` has all of its {} MySQL connections in use until its deadline",
                    function.as_str(),
                    self.returner,
                    granted.connections
                )))
            }
        }
    }
}

/// A statement's first 200 bytes, on one line, as the audit target of a
/// call with no grant.
fn target_of(sql: &str) -> String {
    crate::guest_text::bounded(sql, 200)
}

impl Host for MysqlCtx {
    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn query(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, GuestError>> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (mut sent, client) = match self.check(Function::Query, vec![sql]).await {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        let statement = sent.pop().unwrap_or_default();
        let deadline = self.deadline();
        let result = match self.session(Function::Query, &client).await {
            Ok(session) => session.query(statement, params, deadline).await,
            Err(e) => Err(e),
        };
        Ok(self.counted(result))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn execute(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<ExecResult, GuestError>> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (mut sent, client) = match self.check(Function::Execute, vec![sql]).await {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        let statement = sent.pop().unwrap_or_default();
        let deadline = self.deadline();
        let result = match self.session(Function::Execute, &client).await {
            Ok(session) => session.execute(statement, params, deadline).await,
            Err(e) => Err(e),
        };
        Ok(self.counted(result))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner, statements = statements.len()))]
    async fn transaction(&mut self, statements: Vec<Statement>) -> wasmtime::Result<Result<Vec<ExecResult>, GuestError>> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        if statements.len() > MAX_TRANSACTION_STATEMENTS {
            // No grant is a denial, whatever the size.
            if let Err(e) = self.granted(Function::Transaction, || statements.first().map_or_else(String::new, |s| target_of(&s.sql))) {
                return Ok(Err(e));
            }
            // Guest's fault: the batch is larger than the host runs at once.
            return Ok(Err(GuestError::Limit(format!(
                "a transaction of {} statements is over the most, {MAX_TRANSACTION_STATEMENTS}: split it",
                statements.len()
            ))));
        }
        let (texts, params): (Vec<String>, Vec<Vec<Value>>) = statements.into_iter().map(|s| (s.sql, s.params)).unzip();
        let (sent, client) = match self.check(Function::Transaction, texts).await {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        if sent.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let deadline = self.deadline();
        let result = match self.session(Function::Transaction, &client).await {
            Ok(session) => session.transaction(sent.into_iter().zip(params).collect(), deadline).await,
            Err(e) => Err(e),
        };
        Ok(self.counted(result))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::caps::mysql::client::BoxFuture;
    use crate::caps::mysql::{DEFAULT_POOL_SIZE, MysqlBackends, MysqlGrant, SqlClient, SqlSession, SqlVerb};

    /// Records what reaches the backend, and how many sessions (calls'
    /// connections) were opened.
    #[derive(Default)]
    struct Recorder {
        sent: Arc<Mutex<Vec<String>>>,
        sessions: AtomicUsize,
    }

    struct RecorderSession(Arc<Mutex<Vec<String>>>);

    impl SqlClient for Recorder {
        fn database(&self) -> &str {
            "salt"
        }
        fn session(&self) -> Box<dyn SqlSession> {
            self.sessions.fetch_add(1, Ordering::Relaxed);
            Box::new(RecorderSession(self.sent.clone()))
        }
    }

    impl SqlSession for RecorderSession {
        fn query(&mut self, sql: String, _: Vec<Value>, _: Instant) -> BoxFuture<'_, Result<Rows, GuestError>> {
            self.0.lock().unwrap().push(sql);
            Box::pin(async { Ok(Rows { columns: vec![], rows: vec![] }) })
        }
        fn execute(&mut self, sql: String, _: Vec<Value>, _: Instant) -> BoxFuture<'_, Result<ExecResult, GuestError>> {
            self.0.lock().unwrap().push(sql);
            Box::pin(async { Ok(ExecResult { affected_rows: 1, last_insert_id: None }) })
        }
        fn transaction(&mut self, statements: Vec<(String, Vec<Value>)>, _: Instant) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>> {
            let n = statements.len();
            self.0.lock().unwrap().extend(statements.into_iter().map(|(sql, _)| sql));
            Box::pin(async move { Ok(vec![ExecResult { affected_rows: 1, last_insert_id: None }; n]) })
        }
    }

    fn ctx(recorder: Arc<Recorder>, grant: bool) -> MysqlCtx {
        let backends = MysqlBackends::with_clients(BTreeMap::from([("db".to_owned(), recorder as Arc<dyn SqlClient>)]));
        let grant = grant.then(|| {
            let verbs = vec![SqlVerb::Select, SqlVerb::Insert];
            MysqlGrant { profile: "db".into(), tables: BTreeMap::from([("jids".to_owned(), verbs)]), max_connections: None }
        });
        MysqlCtx::new(Arc::from("r"), grant.as_ref(), &backends, Instant::now() + Duration::from_secs(10))
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    #[test]
    fn only_checked_statements_reach_the_backend() {
        let recorder = Arc::new(Recorder::default());
        let mut c = ctx(recorder.clone(), true);
        let ok = block(c.query("select jid from jids".into(), vec![])).unwrap();
        assert!(ok.is_ok());
        let denied = block(c.query("SELECT * FROM secret".into(), vec![])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("`secret`") && m.contains("`select`")), "{denied:?}");
        let denied = block(c.execute("DELETE FROM jids".into(), vec![])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("`delete`")), "{denied:?}");
        assert_eq!(*recorder.sent.lock().unwrap(), ["SELECT jid FROM jids"]);
    }

    fn statement(sql: &str) -> Statement {
        Statement { sql: sql.into(), params: vec![Value::Text("x".into())] }
    }

    #[test]
    fn a_transaction_runs_only_if_every_statement_passes() {
        let recorder = Arc::new(Recorder::default());
        let mut c = ctx(recorder.clone(), true);
        let insert = "insert into jids (jid) values (?)";
        let denied = block(c.transaction(vec![statement(insert), statement(insert), statement("DELETE FROM jids")])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("statement 3: table `jids` is not granted `delete`")), "{denied:?}");
        let misplaced = block(c.transaction(vec![statement(insert), statement("SELECT jid FROM jids")])).unwrap();
        assert!(matches!(&misplaced, Err(GuestError::Invalid(m)) if m.contains("statement 2:")), "{misplaced:?}");
        let over = vec![statement(insert); MAX_TRANSACTION_STATEMENTS + 1];
        let over = block(c.transaction(over)).unwrap();
        assert!(matches!(&over, Err(GuestError::Limit(m)) if m.contains("1001 statements") && m.contains("1000")), "{over:?}");
        assert!(recorder.sent.lock().unwrap().is_empty(), "a refused transaction ran something");

        let done = block(c.transaction(vec![statement(insert); MAX_TRANSACTION_STATEMENTS])).unwrap().unwrap();
        assert_eq!(done.len(), MAX_TRANSACTION_STATEMENTS);
        assert!(recorder.sent.lock().unwrap().iter().all(|sql| sql == "INSERT INTO jids (jid) VALUES (?)"));
        assert!(block(c.transaction(vec![])).unwrap().unwrap().is_empty());
    }

    #[test]
    fn no_grant_denies_everything() {
        let recorder = Arc::new(Recorder::default());
        let mut c = ctx(recorder.clone(), false);
        let denied = block(c.query("SELECT 1".into(), vec![])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("no mysql grant")), "{denied:?}");
        let denied = block(c.transaction(vec![statement("INSERT INTO jids (jid) VALUES (?)")])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("no mysql grant")), "{denied:?}");
        assert!(recorder.sent.lock().unwrap().is_empty());
    }

    #[test]
    fn a_call_holds_one_session_and_one_slot_from_its_first_statement_to_its_end() {
        let recorder = Arc::new(Recorder::default());
        let backends = MysqlBackends::with_clients(BTreeMap::from([("db".to_owned(), recorder.clone() as Arc<dyn SqlClient>)]));
        let verbs = vec![SqlVerb::Select, SqlVerb::Insert];
        let grant = MysqlGrant { profile: "db".into(), tables: BTreeMap::from([("jids".to_owned(), verbs)]), max_connections: None };
        let call = |ms| MysqlCtx::new(Arc::from("r"), Some(&grant), &backends, Instant::now() + Duration::from_millis(ms));
        let select = || "SELECT jid FROM jids".to_owned();
        let sessions = || recorder.sessions.load(Ordering::Relaxed);

        let mut first = call(10_000);
        for _ in 0..3 {
            block(first.query(select(), vec![])).unwrap().unwrap();
        }
        block(first.execute("INSERT INTO jids (jid) VALUES (?)".into(), vec![])).unwrap().unwrap();
        block(first.transaction(vec![statement("INSERT INTO jids (jid) VALUES (?)")])).unwrap().unwrap();
        assert_eq!(sessions(), 1, "every statement of a call runs in its one session");

        // The other slots taken by calls in flight: one more call waits
        // for a slot until its deadline, and opens no session.
        let slots = DEFAULT_POOL_SIZE.div_ceil(2);
        let others: Vec<MysqlCtx> = (1..slots)
            .map(|_| {
                let mut c = call(10_000);
                block(c.query(select(), vec![])).unwrap().unwrap();
                c
            })
            .collect();
        let mut late = call(50);
        let refused = block(late.query(select(), vec![])).unwrap();
        assert!(matches!(&refused, Err(GuestError::Limit(m)) if m.contains(&format!("all of its {slots} MySQL connections"))), "{refused:?}");
        assert_eq!(sessions(), slots);

        // The first call ends (its state dropped with its store): its slot frees.
        drop(first);
        let mut next = call(10_000);
        assert!(block(next.query(select(), vec![])).unwrap().is_ok());
        assert_eq!(sessions(), slots + 1);
        drop(others);
    }

    #[test]
    fn a_statement_passed_under_a_grant_is_checked_again_when_the_grant_changes() {
        let recorder = Arc::new(Recorder::default());
        let backends = MysqlBackends::with_clients(BTreeMap::from([("db".to_owned(), recorder.clone() as Arc<dyn SqlClient>)]));
        let grant = |verbs: Vec<SqlVerb>| MysqlGrant {
            profile: "db".into(),
            tables: BTreeMap::from([("jids".to_owned(), verbs)]),
            max_connections: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let wide = grant(vec![SqlVerb::Select, SqlVerb::Delete]);
        for _ in 0..2 {
            let mut c = MysqlCtx::new(Arc::from("r"), Some(&wide), &backends, deadline);
            assert!(block(c.execute("DELETE FROM jids".into(), vec![])).unwrap().is_ok());
        }
        // A reload took `delete` away: the same text, remembered as passed
        // under the old grant, is denied under the new one.
        let narrow = grant(vec![SqlVerb::Select]);
        let mut c = MysqlCtx::new(Arc::from("r"), Some(&narrow), &backends, deadline);
        let denied = block(c.execute("DELETE FROM jids".into(), vec![])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("`delete`")), "{denied:?}");
        // Another returner never shares this one's statements.
        let mut other = MysqlCtx::new(Arc::from("other"), Some(&narrow), &backends, deadline);
        assert!(block(other.execute("DELETE FROM jids".into(), vec![])).unwrap().is_err());
        assert_eq!(recorder.sent.lock().unwrap().len(), 2);
    }
}
