//! The WIT functions of `salt:returner/mysql`. The grant check is the first
//! statement of each; only a statement that passed it reaches the backend.

use std::collections::HashMap;

use super::MysqlCtx;
use super::sql::{self, Access, Denial, Function, Refusal};
use crate::bindings::GuestError;
use crate::bindings::salt::returner::mysql::{ExecResult, Host, Rows, Statement, Value};
use crate::caps::audit;
use crate::metrics::metrics;

/// Most statements in one transaction. Stops a guest from holding a
/// connection and its row locks for an unbounded batch, and bounds the
/// checking the host does before anything runs.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1000;

impl MysqlCtx {
    /// The grant's access and the profile's client, or the guest's error.
    fn access(&self, function: Function, target: impl FnOnce() -> String) -> Result<(Access<'_>, &dyn super::SqlClient), GuestError> {
        match (&self.grant, &self.client) {
            // Admin's choice: no grant at all.
            (None, _) => Err(self.deny(function.as_str(), Denial { target: target(), reason: "it has no mysql grant".into() })),
            (Some(g), Some(c)) => Ok((Access { tables: &g.tables, database: c.database() }, c.as_ref())),
            // Host bug: config validation guarantees the profile exists.
            (Some(g), None) => Err(GuestError::Backend(format!("MySQL profile `{}` has no pool in this host", g.profile))),
        }
    }

    /// The statement to run, or the refusal (a denial audited once) as the guest's error.
    fn checked(&self, function: Function, sql: &str) -> Result<(String, &dyn super::SqlClient), GuestError> {
        let (access, client) = self.access(function, || target_of(sql))?;
        // Guest's fault (or its author's): the statement is outside the grant.
        sql::check(sql, function, access).map(|statement| (statement, client)).map_err(|r| self.refused(function, r, None))
    }

    /// Every statement of a transaction checked, before any runs. The
    /// checked text of each distinct SQL text is reused: a batch repeats one
    /// INSERT with different parameters.
    fn checked_all(&self, statements: Vec<Statement>) -> Result<(Vec<(String, Vec<Value>)>, &dyn super::SqlClient), GuestError> {
        let function = Function::Transaction;
        let (access, client) = self.access(function, || statements.first().map_or_else(String::new, |s| target_of(&s.sql)))?;
        if statements.len() > MAX_TRANSACTION_STATEMENTS {
            // Guest's fault: the batch is larger than the host runs at once.
            return Err(GuestError::Limit(format!(
                "a transaction of {} statements is over the most, {MAX_TRANSACTION_STATEMENTS}: split it",
                statements.len()
            )));
        }
        let mut checked: HashMap<String, String> = HashMap::new();
        let mut out = Vec::with_capacity(statements.len());
        for (i, Statement { sql, params }) in statements.into_iter().enumerate() {
            let statement = match checked.get(&sql) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = sql::check(&sql, function, access).map_err(|r| self.refused(function, r, Some(i)))?;
                    checked.insert(sql, statement.clone());
                    statement
                }
            };
            out.push((statement, params));
        }
        Ok((out, client))
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
}

/// A statement's first 200 characters, as the audit target of a call with no grant.
fn target_of(sql: &str) -> String {
    sql.chars().take(200).collect()
}

impl Host for MysqlCtx {
    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn query(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, GuestError>> {
        let (statement, client) = match self.checked(Function::Query, &sql) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.counted(client.query(statement, params).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn execute(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<ExecResult, GuestError>> {
        let (statement, client) = match self.checked(Function::Execute, &sql) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.counted(client.execute(statement, params).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner, statements = statements.len()))]
    async fn transaction(&mut self, statements: Vec<Statement>) -> wasmtime::Result<Result<Vec<ExecResult>, GuestError>> {
        let (statements, client) = match self.checked_all(statements) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        if statements.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        Ok(self.counted(client.transaction(statements).await))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::caps::mysql::client::BoxFuture;
    use crate::caps::mysql::{MysqlBackends, MysqlGrant, SqlClient, SqlVerb};

    /// Records what reaches the backend.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl SqlClient for Recorder {
        fn database(&self) -> &str {
            "salt"
        }
        fn query(&self, sql: String, _: Vec<Value>) -> BoxFuture<'_, Result<Rows, GuestError>> {
            self.0.lock().unwrap().push(sql);
            Box::pin(async { Ok(Rows { columns: vec![], rows: vec![] }) })
        }
        fn execute(&self, sql: String, _: Vec<Value>) -> BoxFuture<'_, Result<ExecResult, GuestError>> {
            self.0.lock().unwrap().push(sql);
            Box::pin(async { Ok(ExecResult { affected_rows: 1, last_insert_id: None }) })
        }
        fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>> {
            let n = statements.len();
            self.0.lock().unwrap().extend(statements.into_iter().map(|(sql, _)| sql));
            Box::pin(async move { Ok(vec![ExecResult { affected_rows: 1, last_insert_id: None }; n]) })
        }
    }

    fn ctx(recorder: Arc<Recorder>, grant: bool) -> MysqlCtx {
        let backends = MysqlBackends::with_clients(BTreeMap::from([("db".to_owned(), recorder as Arc<dyn SqlClient>)]));
        let grant = grant.then(|| {
            let verbs = vec![SqlVerb::Select, SqlVerb::Insert];
            Arc::new(MysqlGrant { profile: "db".into(), tables: BTreeMap::from([("jids".to_owned(), verbs)]) })
        });
        MysqlCtx::new(Arc::from("r"), grant, &backends)
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
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
        assert_eq!(*recorder.0.lock().unwrap(), ["SELECT jid FROM jids"]);
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
        assert!(recorder.0.lock().unwrap().is_empty(), "a refused transaction ran something");

        let done = block(c.transaction(vec![statement(insert); MAX_TRANSACTION_STATEMENTS])).unwrap().unwrap();
        assert_eq!(done.len(), MAX_TRANSACTION_STATEMENTS);
        assert!(recorder.0.lock().unwrap().iter().all(|sql| sql == "INSERT INTO jids (jid) VALUES (?)"));
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
        assert!(recorder.0.lock().unwrap().is_empty());
    }
}
