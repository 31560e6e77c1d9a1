//! The MySQL backend behind a trait ([`SqlClient`]) so the host functions
//! can be tested with a fake; [`MysqlPool`] is the real one: a
//! `mysql_async` pool per server of a profile, created on first use. A
//! profile with several servers (`hosts`) uses one at a time, the same for
//! every call, and moves to the next when a connection cannot be had in
//! time or a statement fails in a way that says the server is gone, out of
//! its cluster's primary component, or read-only. A call's
//! statements run on one connection ([`SqlSession`]), taken at its first
//! statement and given back when the call ends. No statement outlives its
//! call: each runs under a server-side time limit no longer than what is
//! left of the call, and one still running when the call ends is killed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, SslOpts, TxOpts};
use tokio::sync::{OnceCell, Semaphore};

use super::MysqlProfile;
use crate::bindings::GuestError;
use crate::bindings::salt::returner::mysql::{ExecResult, Rows, Value};

/// A boxed future, as the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where statements that already passed the grant check run.
pub trait SqlClient: Send + Sync {
    /// The database the profile uses (`db.table` names must name it).
    fn database(&self) -> &str;
    /// A session for one call. It takes nothing until its first statement.
    fn session(&self) -> Box<dyn SqlSession>;
}

/// One call's statements, on one connection: taken at the first
/// statement, kept for the next (with the statements it has prepared),
/// and given back when the session is dropped at the end of the call.
pub trait SqlSession: Send + Sync {
    /// Run one checked SELECT, finished by `deadline`.
    fn query(&mut self, sql: String, params: Vec<Value>, deadline: Instant) -> BoxFuture<'_, Result<Rows, GuestError>>;
    /// Run one checked INSERT, UPDATE, DELETE or CREATE TABLE, finished by `deadline`.
    fn execute(&mut self, sql: String, params: Vec<Value>, deadline: Instant) -> BoxFuture<'_, Result<ExecResult, GuestError>>;
    /// Run checked INSERT, UPDATE and DELETE statements in one transaction,
    /// finished by `deadline`: all committed, or, on any error, none.
    fn transaction(
        &mut self,
        statements: Vec<(String, Vec<Value>)>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>>;
}

/// KILL QUERY connections a profile opens at once. A flood of calls ending
/// mid-statement cannot turn into a flood of connections; a statement not
/// killed for want of one still ends at its server-side time limit.
const MAX_KILLS_IN_FLIGHT: usize = 4;

/// How long a KILL QUERY may take, connecting included; and how long the
/// killed statement's connection may take to close after it.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest server-side time limit a statement is given; with less of
/// its call left, it does not start.
const MIN_STATEMENT_TIME: Duration = Duration::from_millis(10);

/// What every connection runs once, when it is opened. Connections go back
/// to the pool without `COM_RESET_CONNECTION` (docs/design-notes.md,
/// MySQL), so no statement may run in a transaction the host did not
/// open: a server or an `init_connect` with autocommit off would leave
/// every write of a call open, for the next call on the connection to
/// commit or roll back.
const CONNECTION_SETUP: &str = "SET autocommit = 1";

/// A profile's pool, ready: the password (kept only to scrub it from
/// messages), the options (to open a KILL connection), and the server's kind.
struct Ready {
    pool: Pool,
    password: String,
    opts: Opts,
    mariadb: bool,
}

/// The pools of one `mysql` profile.
pub struct MysqlPool(Arc<Server>);

/// One profile: its settings, its servers and, once used, their pools.
struct Server {
    name: String,
    profile: MysqlProfile,
    /// `host:port` of each server, in the profile's order (one for `host`
    /// and `port`, or `socket`).
    addresses: Vec<(String, u16)>,
    pools: Vec<OnceCell<Ready>>,
    /// The server calls use now.
    current: AtomicUsize,
    kills: Arc<Semaphore>,
}

impl MysqlPool {
    /// Pools for `profile`; nothing connects until the first statement.
    pub fn new(name: &str, profile: MysqlProfile) -> Self {
        // Validated with the config: a bad entry cannot reach here.
        let addresses = profile.servers().unwrap_or_else(|_| vec![(profile.host.clone(), profile.port)]);
        Self(Arc::new(Server {
            name: name.to_owned(),
            pools: addresses.iter().map(|_| OnceCell::new()).collect(),
            addresses,
            profile,
            current: AtomicUsize::new(0),
            kills: Arc::new(Semaphore::new(MAX_KILLS_IN_FLIGHT)),
        }))
    }
}

impl Server {
    /// Server `node`'s address, as messages name it.
    fn address(&self, node: usize) -> String {
        match &self.profile.socket {
            Some(socket) => socket.display().to_string(),
            None => {
                let (host, port) = &self.addresses[node];
                format!("{host}:{port}")
            }
        }
    }

    /// Stop using server `node` for new calls, if calls still use it: it
    /// failed. The next one in the profile's order takes over.
    fn failed(&self, node: usize, why: &GuestError) {
        let n = self.addresses.len();
        if n < 2 {
            return;
        }
        let next = (node + 1) % n;
        if self.current.compare_exchange(node, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let why = message(why);
            tracing::warn!(profile = %self.name, from = %self.address(node), to = %self.address(next), error = %why, "MySQL server failed; moving to the next");
        }
    }

    /// A connection from the server calls use now, or from the next ones
    /// in order when it cannot give one: the server it came from, its
    /// pool, and the connection.
    async fn connect(&self, deadline: Instant) -> Result<(usize, &Ready, Conn), GuestError> {
        let first = self.current.load(Ordering::Acquire);
        let n = self.addresses.len();
        let mut failures = Vec::new();
        for step in 0..n {
            let node = (first + step) % n;
            let got = match self.pool(node).await {
                Ok(ready) => self.conn(ready, deadline).await.map(|conn| (ready, conn)),
                Err(e) => Err(e),
            };
            match got {
                Ok((ready, conn)) => {
                    if step > 0 && self.current.compare_exchange(first, node, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        tracing::warn!(profile = %self.name, server = %self.address(node), "MySQL server in use now");
                    }
                    return Ok((node, ready, conn));
                }
                Err(e) if n == 1 => return Err(e),
                Err(e) => failures.push(format!("{}: {}", self.address(node), message(&e))),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(GuestError::Backend(format!("MySQL profile `{}`: no server answered ({})", self.name, failures.join("; "))))
    }

    async fn pool(&self, node: usize) -> Result<&Ready, GuestError> {
        self.pools[node]
            .get_or_try_init(|| async {
                let p = &self.profile;
                let password = match &p.password_file {
                    None => String::new(),
                    Some(file) => match tokio::fs::read_to_string(file).await {
                        Ok(text) => text.trim_end_matches(['\n', '\r']).to_owned(),
                        Err(e) => {
                            // Admin's fault: the path is logged host-side, not shown to the guest.
                            tracing::error!(profile = %self.name, file = %file.display(), error = %e, "cannot read the mysql password_file");
                            return Err(GuestError::Backend(format!(
                                "MySQL profile `{}`: the host cannot read its password file",
                                self.name
                            )));
                        }
                    },
                };
                let constraints = PoolConstraints::new(0, p.pool_size)
                    .ok_or_else(|| GuestError::Backend(format!("MySQL profile `{}`: bad pool_size", self.name)))?;
                let mut opts = OptsBuilder::default()
                    .user(Some(p.user.clone()))
                    .pass((!password.is_empty()).then(|| password.clone()))
                    .db_name(Some(p.database.clone()))
                    .init(vec![CONNECTION_SETUP.to_owned()])
                    .pool_opts(PoolOpts::default().with_constraints(constraints).with_reset_connection(false))
                    .stmt_cache_size(64);
                opts = match &p.socket {
                    Some(socket) => opts.socket(Some(socket.to_string_lossy().into_owned())).prefer_socket(true),
                    None => {
                        let (host, port) = &self.addresses[node];
                        opts.ip_or_hostname(host.clone()).tcp_port(*port).prefer_socket(false)
                    }
                };
                if let Some(ca) = &p.ssl_ca {
                    let mut ssl = SslOpts::default().with_root_certs(vec![ca.clone().into()]);
                    if let (Some(cert), Some(key)) = (&p.ssl_cert, &p.ssl_key) {
                        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone().into(), key.clone().into())));
                    }
                    opts = opts.ssl_opts(ssl);
                }
                let opts = Opts::from(opts);
                let pool = Pool::new(opts.clone());
                let mariadb = server_is_mariadb(&pool, self.profile.connect_timeout_ms).await.map_err(|e| match e {
                    Some(e) => backend_error(&self.name, &e, &password),
                    None => self.no_connection(),
                })?;
                Ok(Ready { pool, password, opts, mariadb })
            })
            .await
    }

    fn no_connection(&self) -> GuestError {
        GuestError::Backend(format!("MySQL profile `{}`: no connection within {} ms", self.name, self.profile.connect_timeout_ms))
    }


    /// A connection from the pool, waited for until the connect timeout or the deadline.
    async fn conn(&self, ready: &Ready, deadline: Instant) -> Result<Conn, GuestError> {
        let wait = Duration::from_millis(self.profile.connect_timeout_ms).min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, ready.pool.get_conn()).await {
            Err(_) => Err(self.no_connection()),
            Ok(Err(e)) => Err(backend_error(&self.name, &e, &ready.password)),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    /// How long the next statement may run: the profile's statement
    /// timeout or what is left of the call, whichever is shorter.
    fn statement_time(&self, deadline: Instant) -> Result<Duration, GuestError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let time = Duration::from_millis(self.profile.statement_timeout_ms).min(left);
        if time < MIN_STATEMENT_TIME {
            return Err(GuestError::Backend(format!("MySQL profile `{}`: the call has no time left to run a statement", self.name)));
        }
        Ok(time)
    }

    fn statement_timeout(&self, time: Duration) -> GuestError {
        GuestError::Backend(format!(
            "MySQL profile `{}`: the statement ran past its time limit of {} ms (statement_timeout_ms, or what was left of the call)",
            self.name,
            time.as_millis()
        ))
    }

    /// Watch the statements of `conn` until it is handed back: if the call
    /// ends first (its future dropped at the deadline) they are killed and
    /// the connection closed.
    fn watch(&self, conn: Conn, ready: &Ready) -> Running {
        Running { id: conn.id(), conn: Some(conn), opts: ready.opts.clone(), kills: self.kills.clone(), profile: self.name.clone() }
    }
}

/// The server-side time limit of `time` put on a checked statement: the
/// text to prepare. MariaDB limits any statement (`SET STATEMENT
/// max_statement_time`); MySQL limits SELECT only (`MAX_EXECUTION_TIME`),
/// and its writes are bounded by the KILL at the deadline. The limit is
/// rounded down to one of a few steps (each 4/5 of the next), so a
/// statement is prepared in a handful of variants, not one per call.
fn time_limited(sql: &str, time: Duration, mariadb: bool) -> String {
    let ms = limit_step(time.as_millis().min(u128::from(u32::MAX)) as u64);
    if mariadb {
        format!("SET STATEMENT max_statement_time = {}.{:03} FOR {sql}", ms / 1000, ms % 1000)
    } else if let Some(rest) = sql.strip_prefix("SELECT ") {
        // Host-made text after the check, so the hint cannot come from a guest.
        format!("SELECT /*+ MAX_EXECUTION_TIME({ms}) */ {rest}")
    } else {
        sql.to_owned()
    }
}

/// The largest step not over `ms`: 10 ms, then each step 5/4 of the one before.
fn limit_step(ms: u64) -> u64 {
    let mut step = MIN_STATEMENT_TIME.as_millis() as u64;
    while step + step / 4 <= ms {
        step += step / 4;
    }
    step
}

/// Whether the server is MariaDB (asked once per pool). `None` as the error:
/// no connection within the timeout.
async fn server_is_mariadb(pool: &Pool, connect_timeout_ms: u64) -> Result<bool, Option<mysql_async::Error>> {
    let ask = async {
        let mut conn = pool.get_conn().await?;
        let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
        Ok::<_, mysql_async::Error>(version.is_some_and(|v| v.contains("MariaDB")))
    };
    match tokio::time::timeout(Duration::from_millis(connect_timeout_ms), ask).await {
        Err(_) => Err(None),
        Ok(result) => result.map_err(Some),
    }
}

/// A connection with a statement on it, owned until the statement ends
/// cleanly and [`Running::done`] hands it back. Dropped before that (the
/// call's deadline, a time limit the server did not enforce, an error that
/// leaves the protocol in doubt), its statement is killed and the
/// connection closed: nothing runs on at the server, where runaway queries
/// would otherwise pile up to `max_connections`, and a connection in an
/// unknown state never serves another call (nor meets a KILL meant for
/// this one).
struct Running {
    id: u32,
    conn: Option<Conn>,
    opts: Opts,
    kills: Arc<Semaphore>,
    profile: String,
}

impl Running {
    /// The connection, while the statement runs.
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a running statement's connection is taken only by `done`")
    }

    /// The statement ended cleanly: the connection, for the call's next one.
    fn done(mut self) -> Option<Conn> {
        self.conn.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (id, profile) = (self.id, self.profile.clone());
        let permit = self.kills.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(profile, connection = id, "too many KILL QUERY in flight; the statement ends at its server-side time limit");
        }
        let opts = self.opts.clone();
        runtime.spawn(async move {
            if let Some(permit) = permit {
                let kill = async {
                    let mut killer = Conn::new(opts).await?;
                    killer.query_drop(format!("KILL QUERY {id}")).await?;
                    killer.disconnect().await
                };
                match tokio::time::timeout(KILL_TIMEOUT, kill).await {
                    Ok(Ok(())) => tracing::debug!(profile, connection = id, "killed a statement its call left running"),
                    // Unknown thread: it ended on its own meanwhile.
                    Ok(Err(mysql_async::Error::Server(e))) if e.code == 1094 => {}
                    Ok(Err(e)) => tracing::warn!(profile, connection = id, error = %e, "KILL QUERY failed"),
                    Err(_) => tracing::warn!(profile, connection = id, "KILL QUERY timed out"),
                }
                drop(permit);
            }
            // Closing reads what the statement left (its end or the KILL's
            // error) and rolls back an open transaction first; a connection
            // that cannot close in time is dropped, and the pool discards it.
            let _ = tokio::time::timeout(KILL_TIMEOUT, conn.disconnect()).await;
        });
    }
}

impl SqlClient for MysqlPool {
    fn database(&self) -> &str {
        &self.0.profile.database
    }

    fn session(&self) -> Box<dyn SqlSession> {
        Box::new(MysqlSession { server: self.0.clone(), conn: None })
    }
}

/// One call's connection on a profile's pool: none until its first
/// statement; back to the pool when dropped. Between statements it holds
/// the connection only if the last one left it [`Left::Clean`].
struct MysqlSession {
    server: Arc<Server>,
    /// The connection and the server it is to.
    conn: Option<(usize, Conn)>,
}

/// What a statement left its connection fit for.
enum Left {
    /// The server answered every command (success or a server error): the
    /// protocol is where it should be, and at most a transaction the driver
    /// knows of is open, which it rolls back before the next command.
    Clean,
    /// Interrupted, timed out, or a client-side error: a statement may still
    /// run on it, or the protocol is in doubt.
    InDoubt,
    /// The server answered that it cannot serve: shutting down, killed the
    /// connection, outside its cluster's primary component, or read-only.
    /// The connection is of no more use, nor is the server until it is back.
    Unusable,
}

/// Server errors after which the server is of no use for now: 1053 shutdown,
/// 1927 connection killed, 1047 and 1180 a Galera node outside the primary
/// component (`WSREP has not yet prepared node for application use`; a
/// commit `Not connected to Primary Component`), 1290, 1792 and 1836
/// read-only (a replica, or a primary that stepped down).
const SERVER_UNUSABLE: &[u16] = &[1047, 1053, 1180, 1290, 1792, 1836, 1927];

impl Left {
    /// What a failed command left.
    fn after(e: &mysql_async::Error) -> Left {
        match e {
            mysql_async::Error::Server(s) if SERVER_UNUSABLE.contains(&s.code) => Left::Unusable,
            mysql_async::Error::Server(_) => Left::Clean,
            _ => Left::InDoubt,
        }
    }
}

impl MysqlSession {
    /// Run `statement` on the call's connection: the one it holds, or a new
    /// one from the server calls use now (or the next that answers). After
    /// it, keep a clean connection for the call's next statement; drop one
    /// in doubt, which kills what runs on it and closes it, and move new
    /// calls off a server that failed.
    async fn run<T>(
        &mut self,
        deadline: Instant,
        statement: impl for<'a> FnOnce(&'a Server, &'a mut Conn, &'a Ready) -> BoxFuture<'a, (Result<T, GuestError>, Left)>,
    ) -> Result<T, GuestError> {
        let server = self.server.clone();
        let (node, ready, conn) = match self.conn.take() {
            Some((node, conn)) => (node, server.pool(node).await?, conn),
            None => server.connect(deadline).await?,
        };
        let mut running = server.watch(conn, ready);
        let (result, left) = statement(&server, running.conn(), ready).await;
        match (&result, left) {
            (_, Left::Clean) => self.conn = running.done().map(|conn| (node, conn)),
            // A server that answers it cannot serve, or stops answering.
            (Err(e @ GuestError::Backend(_)), Left::Unusable | Left::InDoubt) => server.failed(node, e),
            _ => {}
        }
        result
    }
}

impl SqlSession for MysqlSession {
    fn query(&mut self, sql: String, params: Vec<Value>, deadline: Instant) -> BoxFuture<'_, Result<Rows, GuestError>> {
        Box::pin(self.run(deadline, move |server, conn, ready| Box::pin(server.query(conn, ready, sql, params, deadline))))
    }

    fn execute(&mut self, sql: String, params: Vec<Value>, deadline: Instant) -> BoxFuture<'_, Result<ExecResult, GuestError>> {
        Box::pin(self.run(deadline, move |server, conn, ready| Box::pin(server.execute(conn, ready, sql, params, deadline))))
    }

    fn transaction(&mut self, statements: Vec<(String, Vec<Value>)>, deadline: Instant) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>> {
        Box::pin(self.run(deadline, move |server, conn, ready| Box::pin(server.transaction(conn, ready, statements, deadline))))
    }
}

impl Server {
    async fn query(&self, conn: &mut Conn, ready: &Ready, sql: String, params: Vec<Value>, deadline: Instant) -> (Result<Rows, GuestError>, Left) {
        let time = match self.statement_time(deadline) {
            Ok(time) => time,
            Err(e) => return (Err(e), Left::Clean),
        };
        let limit = self.profile.max_result_bytes;
        let sql = time_limited(&sql, time, ready.mariadb);
        let run = async {
            let mut result = conn.exec_iter(sql, to_params(params)).await?;
            let columns = result.columns().unwrap_or_default();
            let names = columns.iter().map(|c| c.name_str().into_owned()).collect();
            let mut rows = Vec::new();
            let mut size = 0u64;
            while let Some(row) = result.next().await? {
                let mut out = Vec::with_capacity(columns.len());
                for (value, column) in row.unwrap().into_iter().zip(columns.iter()) {
                    let value = from_mysql(value, column);
                    size += value_size(&value);
                    out.push(value);
                }
                rows.push(out);
                if size > limit {
                    // The rest of the result is the KILL's to end.
                    return Ok(Err(GuestError::Limit(format!(
                        "the query's result is over max_result_bytes ({limit} bytes) of MySQL profile `{}`",
                        self.name
                    ))));
                }
            }
            Ok::<_, mysql_async::Error>(Ok(Rows { columns: names, rows }))
        };
        match tokio::time::timeout(time, run).await {
            Err(_) => (Err(self.statement_timeout(time)), Left::InDoubt),
            Ok(Err(e)) => (Err(backend_error(&self.name, &e, &ready.password)), Left::after(&e)),
            Ok(Ok(Err(over))) => (Err(over), Left::InDoubt),
            Ok(Ok(Ok(rows))) => (Ok(rows), Left::Clean),
        }
    }

    async fn execute(&self, conn: &mut Conn, ready: &Ready, sql: String, params: Vec<Value>, deadline: Instant) -> (Result<ExecResult, GuestError>, Left) {
        let time = match self.statement_time(deadline) {
            Ok(time) => time,
            Err(e) => return (Err(e), Left::Clean),
        };
        let sql = time_limited(&sql, time, ready.mariadb);
        match tokio::time::timeout(time, exec(conn, sql, params)).await {
            Err(_) => (Err(self.statement_timeout(time)), Left::InDoubt),
            Ok(Ok(done)) => (Ok(done), Left::Clean),
            Ok(Err(e)) => (Err(backend_error(&self.name, &e, &ready.password)), Left::after(&e)),
        }
    }

    async fn transaction(
        &self,
        conn: &mut Conn,
        ready: &Ready,
        statements: Vec<(String, Vec<Value>)>,
        deadline: Instant,
    ) -> (Result<Vec<ExecResult>, GuestError>, Left) {
        let password = ready.password.as_str();
        let count = statements.len();
        let rolled_back = |e: GuestError, at: &str| match e {
            GuestError::Backend(m) => GuestError::Backend(format!("{m} ({at}; the transaction was rolled back)")),
            GuestError::Invalid(m) => GuestError::Invalid(format!("{m} ({at}; the transaction was rolled back)")),
            other => other,
        };
        let time = match self.statement_time(deadline) {
            Ok(time) => time,
            Err(e) => return (Err(e), Left::Clean),
        };
        let mut tx = match tokio::time::timeout(time, conn.start_transaction(TxOpts::default())).await {
            Err(_) => return (Err(self.statement_timeout(time)), Left::InDoubt),
            Ok(Err(e)) => return (Err(backend_error(&self.name, &e, password)), Left::after(&e)),
            Ok(Ok(tx)) => tx,
        };
        let mut results = Vec::with_capacity(count);
        for (i, (sql, params)) in statements.into_iter().enumerate() {
            let at = format!("statement {} of {count}", i + 1);
            let time = match self.statement_time(deadline) {
                Ok(time) => time,
                // Nothing runs: the dropped transaction is rolled back
                // before the connection's next command, or when it goes
                // back to the pool.
                Err(e) => return (Err(rolled_back(e, &at)), Left::Clean),
            };
            let sql = time_limited(&sql, time, ready.mariadb);
            match tokio::time::timeout(time, exec(&mut tx, sql, params)).await {
                Ok(Ok(done)) => results.push(done),
                Ok(Err(e)) => {
                    // A clean rollback keeps the connection for the call;
                    // if even that fails, it is closed and the server
                    // rolls back.
                    let rollback = tokio::time::timeout(Duration::from_millis(self.profile.statement_timeout_ms), tx.rollback()).await;
                    let left = if let Ok(Ok(())) = rollback { Left::after(&e) } else { Left::InDoubt };
                    return (Err(rolled_back(backend_error(&self.name, &e, password), &at)), left);
                }
                // The statement may still be running: it is killed, the
                // connection closed, and the server rolls back.
                Err(_) => return (Err(rolled_back(self.statement_timeout(time), &at)), Left::InDoubt),
            }
        }
        let time = match self.statement_time(deadline) {
            Ok(time) => time,
            Err(e) => return (Err(rolled_back(e, "at commit")), Left::Clean),
        };
        match tokio::time::timeout(time, tx.commit()).await {
            Ok(Ok(())) => (Ok(results), Left::Clean),
            Ok(Err(e)) => (Err(rolled_back(backend_error(&self.name, &e, password), "at commit")), Left::after(&e)),
            Err(_) => (
                Err(GuestError::Backend(format!(
                    "MySQL profile `{}`: the commit ran past {} ms; whether it committed is unknown",
                    self.name,
                    time.as_millis()
                ))),
                Left::InDoubt,
            ),
        }
    }
}

/// Run one checked statement that changes data, on a connection or in a transaction.
async fn exec<Q: Queryable>(conn: &mut Q, sql: String, params: Vec<Value>) -> Result<ExecResult, mysql_async::Error> {
    let result = conn.exec_iter(sql, to_params(params)).await?;
    let done = ExecResult { affected_rows: result.affected_rows(), last_insert_id: result.last_insert_id() };
    result.drop_result().await?;
    Ok(done)
}

/// The driver's error as the guest sees it: a server error with its code
/// (so a returner can tell a duplicate key, 1062, from the rest), anything
/// else as the driver says it; never the password. A server error about the
/// statement or its data (too long, a duplicate key, no such column, ...) is
/// `invalid`: the same statement fails the same way on any server, so the
/// spool does not retry it. What may pass on a retry (the server or node
/// unavailable, a deadlock, a timeout, too many connections, read-only) and
/// every error of the connection is `backend`.
/// The text of an error, for a message that lists several.
fn message(e: &GuestError) -> String {
    match e {
        GuestError::Denied(m) | GuestError::Backend(m) | GuestError::Invalid(m) | GuestError::NotFound(m) | GuestError::Unsupported(m) | GuestError::Limit(m) => m.clone(),
    }
}

fn backend_error(profile: &str, e: &mysql_async::Error, password: &str) -> GuestError {
    let (text, lasting) = match e {
        mysql_async::Error::Server(s) => {
            (format!("MySQL error {} ({}): {}", s.code, s.state, s.message), !server_error_may_pass(s.code))
        }
        other => (format!("MySQL profile `{profile}`: {other}"), false),
    };
    let text = if password.is_empty() { text } else { text.replace(password, "********") };
    if lasting { GuestError::Invalid(text) } else { GuestError::Backend(text) }
}

/// Server errors that may pass when the statement is run again: the server
/// going away or not ready (1053 shutdown, 1047 a Galera node outside the
/// primary component, 1927 connection killed, 1317 interrupted), contention
/// (1205 lock wait timeout, 1213 deadlock, 1180 commit failed), time limits
/// (1969 MariaDB's max_statement_time, 3024 MySQL's MAX_EXECUTION_TIME),
/// connection limits (1040, 1203, 1226), read-only servers (1290, 1792,
/// 1836), disk or memory trouble on the server (1021, 1037, 1038, 1041,
/// 1114 table full, 3, 1030 storage engine), and the server's setup, which
/// an admin fixes (1044, 1045 access denied, 1049 unknown database, 1142,
/// 1143, 1227 privileges, 1146 no such table).
fn server_error_may_pass(code: u16) -> bool {
    matches!(
        code,
        3 | 1021 | 1030 | 1037 | 1038 | 1040 | 1041 | 1044 | 1045 | 1047 | 1049 | 1053 | 1114 | 1142 | 1143 | 1146
            | 1180 | 1203 | 1205 | 1213 | 1226 | 1227 | 1290 | 1317 | 1792 | 1836 | 1927 | 1969 | 3024
    )
}

fn to_params(params: Vec<Value>) -> Params {
    if params.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        params
            .into_iter()
            .map(|v| match v {
                Value::Null => mysql_async::Value::NULL,
                Value::Int(n) => mysql_async::Value::Int(n),
                Value::Uint(n) => mysql_async::Value::UInt(n),
                Value::Double(n) => mysql_async::Value::Double(n),
                Value::Text(s) => mysql_async::Value::Bytes(s.into_bytes()),
                Value::Bytes(b) => mysql_async::Value::Bytes(b),
            })
            .collect(),
    )
}

/// Charset number of `binary` (BLOB, BINARY, VARBINARY columns).
const BINARY_CHARSET: u16 = 63;

fn from_mysql(value: mysql_async::Value, column: &mysql_async::Column) -> Value {
    use mysql_async::Value as M;
    match value {
        M::NULL => Value::Null,
        M::Int(n) => Value::Int(n),
        M::UInt(n) => Value::Uint(n),
        M::Float(n) => Value::Double(f64::from(n)),
        M::Double(n) => Value::Double(n),
        M::Bytes(bytes) => {
            let decimal = matches!(column.column_type(), ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL);
            let binary = column.character_set() == BINARY_CHARSET && column.flags().contains(ColumnFlags::BINARY_FLAG);
            if binary && !decimal {
                Value::Bytes(bytes)
            } else {
                String::from_utf8(bytes).map_or_else(|e| Value::Bytes(e.into_bytes()), Value::Text)
            }
        }
        M::Date(y, mo, d, h, mi, s, us) => Value::Text(if us == 0 {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
        } else {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }),
        M::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if neg { "-" } else { "" };
            Value::Text(if us == 0 {
                format!("{sign}{hours:02}:{mi:02}:{s:02}")
            } else {
                format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
            })
        }
    }
}

fn value_size(value: &Value) -> u64 {
    match value {
        Value::Text(s) => s.len() as u64 + 8,
        Value::Bytes(b) => b.len() as u64 + 8,
        _ => 16,
    }
}
