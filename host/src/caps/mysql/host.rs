//! The WIT functions of `salt:returner/mysql`. The grant check is the first
//! statement of each; only a statement that passed it reaches the backend.

use super::MysqlCtx;
use super::sql::{self, Access, Denial, Function};
use crate::bindings::GuestError;
use crate::bindings::salt::returner::mysql::{ExecResult, Host, Rows, Value};
use crate::caps::audit;

impl MysqlCtx {
    /// The statement to run, or the denial (audited once) as the guest's error.
    fn checked(&self, function: Function, sql: &str) -> Result<(String, &dyn super::SqlClient), GuestError> {
        let op = function.as_str();
        let (grant, client) = match (&self.grant, &self.client) {
            // Admin's choice: no grant at all.
            (None, _) => return Err(self.deny(op, Denial { target: target_of(sql), reason: "it has no mysql grant".into() })),
            (Some(g), Some(c)) => (g, c),
            // Host bug: config validation guarantees the profile exists.
            (Some(g), None) => {
                return Err(GuestError::Backend(format!("MySQL profile `{}` has no pool in this host", g.profile)));
            }
        };
        let access = Access { tables: &grant.tables, database: client.database() };
        // Guest's fault (or its author's): the statement is outside the grant.
        match sql::check(sql, function, access) {
            Ok(statement) => Ok((statement, client.as_ref())),
            Err(denial) => Err(self.deny(op, denial)),
        }
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
        Ok(client.query(statement, params).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn execute(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<ExecResult, GuestError>> {
        let (statement, client) = match self.checked(Function::Execute, &sql) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        Ok(client.execute(statement, params).await)
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
    }

    fn ctx(recorder: Arc<Recorder>, grant: bool) -> MysqlCtx {
        let backends = MysqlBackends::with_clients(BTreeMap::from([("db".to_owned(), recorder as Arc<dyn SqlClient>)]));
        let grant = grant.then(|| {
            Arc::new(MysqlGrant { profile: "db".into(), tables: BTreeMap::from([("jids".to_owned(), vec![SqlVerb::Select])]) })
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

    #[test]
    fn no_grant_denies_everything() {
        let recorder = Arc::new(Recorder::default());
        let mut c = ctx(recorder.clone(), false);
        let denied = block(c.query("SELECT 1".into(), vec![])).unwrap();
        assert!(matches!(&denied, Err(GuestError::Denied(m)) if m.contains("no mysql grant")), "{denied:?}");
        assert!(recorder.0.lock().unwrap().is_empty());
    }
}
