//! The MySQL backend behind a trait ([`SqlClient`]) so the host functions
//! can be tested with a fake; [`MysqlPool`] is the real one: a
//! `mysql_async` pool per profile, created on first use.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, SslOpts, TxOpts};
use tokio::sync::OnceCell;

use super::MysqlProfile;
use crate::bindings::GuestError;
use crate::bindings::salt::returner::mysql::{ExecResult, Rows, Value};

/// A boxed future, as the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs statements that already passed the grant check.
pub trait SqlClient: Send + Sync {
    /// The database the profile uses (`db.table` names must name it).
    fn database(&self) -> &str;
    /// Run one checked SELECT.
    fn query(&self, sql: String, params: Vec<Value>) -> BoxFuture<'_, Result<Rows, GuestError>>;
    /// Run one checked INSERT, UPDATE, DELETE or CREATE TABLE.
    fn execute(&self, sql: String, params: Vec<Value>) -> BoxFuture<'_, Result<ExecResult, GuestError>>;
    /// Run checked INSERT, UPDATE and DELETE statements in one transaction:
    /// all committed, or, on any error, none.
    fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>>;
}

/// The pool of one `mysql` profile.
pub struct MysqlPool {
    name: String,
    profile: MysqlProfile,
    pool: OnceCell<(Pool, String)>,
}

impl MysqlPool {
    /// A pool for `profile`; nothing connects until the first statement.
    pub fn new(name: &str, profile: MysqlProfile) -> Self {
        Self { name: name.to_owned(), profile, pool: OnceCell::new() }
    }

    /// The pool and the password (kept only to scrub it from messages).
    async fn pool(&self) -> Result<&(Pool, String), GuestError> {
        self.pool
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
                    .pool_opts(PoolOpts::default().with_constraints(constraints))
                    .stmt_cache_size(64);
                opts = match &p.socket {
                    Some(socket) => opts.socket(Some(socket.to_string_lossy().into_owned())).prefer_socket(true),
                    None => opts.ip_or_hostname(p.host.clone()).tcp_port(p.port).prefer_socket(false),
                };
                if let Some(ca) = &p.ssl_ca {
                    let mut ssl = SslOpts::default().with_root_certs(vec![ca.clone().into()]);
                    if let (Some(cert), Some(key)) = (&p.ssl_cert, &p.ssl_key) {
                        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone().into(), key.clone().into())));
                    }
                    opts = opts.ssl_opts(ssl);
                }
                Ok((Pool::new(opts), password))
            })
            .await
    }

    async fn conn(&self) -> Result<(mysql_async::Conn, &str), GuestError> {
        let (pool, password) = self.pool().await?;
        let wait = Duration::from_millis(self.profile.connect_timeout_ms);
        match tokio::time::timeout(wait, pool.get_conn()).await {
            Err(_) => Err(GuestError::Backend(format!(
                "MySQL profile `{}`: no connection within {} ms",
                self.name, self.profile.connect_timeout_ms
            ))),
            Ok(Err(e)) => Err(backend_error(&self.name, &e, password)),
            Ok(Ok(conn)) => Ok((conn, password)),
        }
    }

    fn statement_time(&self) -> Duration {
        Duration::from_millis(self.profile.statement_timeout_ms)
    }

    fn statement_timeout(&self) -> GuestError {
        GuestError::Backend(format!(
            "MySQL profile `{}`: the statement ran past {} ms",
            self.name, self.profile.statement_timeout_ms
        ))
    }
}

impl SqlClient for MysqlPool {
    fn database(&self) -> &str {
        &self.profile.database
    }

    fn query(&self, sql: String, params: Vec<Value>) -> BoxFuture<'_, Result<Rows, GuestError>> {
        Box::pin(async move {
            let (mut conn, password) = self.conn().await?;
            let limit = self.profile.max_result_bytes;
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
                        return Ok(Err(GuestError::Limit(format!(
                            "the query's result is over max_result_bytes ({limit} bytes) of MySQL profile `{}`",
                            self.name
                        ))));
                    }
                }
                Ok::<_, mysql_async::Error>(Ok(Rows { columns: names, rows }))
            };
            match tokio::time::timeout(self.statement_time(), run).await {
                Err(_) => Err(self.statement_timeout()),
                Ok(Err(e)) => Err(backend_error(&self.name, &e, password)),
                Ok(Ok(result)) => result,
            }
        })
    }

    fn execute(&self, sql: String, params: Vec<Value>) -> BoxFuture<'_, Result<ExecResult, GuestError>> {
        Box::pin(async move {
            let (mut conn, password) = self.conn().await?;
            match tokio::time::timeout(self.statement_time(), exec(&mut conn, sql, params)).await {
                Err(_) => Err(self.statement_timeout()),
                Ok(Err(e)) => Err(backend_error(&self.name, &e, password)),
                Ok(Ok(done)) => Ok(done),
            }
        })
    }

    fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> BoxFuture<'_, Result<Vec<ExecResult>, GuestError>> {
        Box::pin(async move {
            let (mut conn, password) = self.conn().await?;
            let count = statements.len();
            let failed = |e: GuestError, at: &str| match e {
                GuestError::Backend(m) => GuestError::Backend(format!("{m} ({at}; the transaction was rolled back)")),
                other => other,
            };
            let mut tx = match tokio::time::timeout(self.statement_time(), conn.start_transaction(TxOpts::default())).await {
                Err(_) => return Err(self.statement_timeout()),
                Ok(Err(e)) => return Err(backend_error(&self.name, &e, password)),
                Ok(Ok(tx)) => tx,
            };
            let mut results = Vec::with_capacity(count);
            for (i, (sql, params)) in statements.into_iter().enumerate() {
                let at = format!("statement {} of {count}", i + 1);
                match tokio::time::timeout(self.statement_time(), exec(&mut tx, sql, params)).await {
                    Ok(Ok(done)) => results.push(done),
                    Ok(Err(e)) => {
                        // A clean rollback keeps the connection for the pool;
                        // if even that fails, the server rolls back when the
                        // pool drops the broken connection.
                        let _ = tokio::time::timeout(self.statement_time(), tx.rollback()).await;
                        return Err(failed(backend_error(&self.name, &e, password), &at));
                    }
                    Err(_) => {
                        // The statement may still be running: close the
                        // connection, which ends it and rolls back, rather
                        // than hand the pool a connection mid-statement.
                        drop(tx);
                        let _ = tokio::time::timeout(self.statement_time(), conn.disconnect()).await;
                        return Err(failed(self.statement_timeout(), &at));
                    }
                }
            }
            match tokio::time::timeout(self.statement_time(), tx.commit()).await {
                Ok(Ok(())) => Ok(results),
                Ok(Err(e)) => Err(failed(backend_error(&self.name, &e, password), "at commit")),
                Err(_) => Err(GuestError::Backend(format!(
                    "MySQL profile `{}`: the commit ran past {} ms; whether it committed is unknown",
                    self.name, self.profile.statement_timeout_ms
                ))),
            }
        })
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
/// else as the driver says it; never the password.
fn backend_error(profile: &str, e: &mysql_async::Error, password: &str) -> GuestError {
    let text = match e {
        mysql_async::Error::Server(s) => format!("MySQL error {} ({}): {}", s.code, s.state, s.message),
        other => format!("MySQL profile `{profile}`: {other}"),
    };
    let text = if password.is_empty() { text } else { text.replace(password, "********") };
    GuestError::Backend(text)
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
