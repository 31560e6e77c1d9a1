//! The `mysql` capability: SQL on granted tables of one MySQL profile,
//! checked per table and verb.
//!
//! - [`MysqlProfile`] / [`MysqlGrant`]: the config (profile: where and how
//!   to connect, host-side only; grant: verbs per table).
//! - `sql`: the statement check (a real SQL parser, MySQL dialect).
//! - `checker`: the threads the check runs on, off the async workers.
//! - `client`: the backend behind a trait, one lazily created pool per
//!   profile, and a session per call holding one connection.
//! - `host`: the WIT functions; the grant check is the first thing each does.

mod checker;
mod client;
mod host;
pub mod sql;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Deserializer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::mysql;
use super::Profile;
use super::turn::Turn;

pub use client::{SqlClient, SqlSession};

/// Connections a profile's pool keeps open at most, unless the profile says.
/// Stops a burst of calls from opening more connections than the server
/// allows the returner's user.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long a call waits for a connection (from the pool or a new one),
/// unless the profile says. An unreachable server fails the call in this
/// time instead of holding it to its deadline.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one statement may run, unless the profile says. Stops a slow
/// query from holding a pooled connection for ever.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Largest result a query may return to a guest, unless the profile says.
/// Stops a guest from making the host buffer a whole table.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;

/// How the host reaches a MySQL or MariaDB server. Credentials stay
/// host-side: the password is read from `password_file` and never written
/// in the config. Salt's option names are accepted beside the native ones
/// (`mysql.host`, `mysql.port`, `mysql.user`, `mysql.db`,
/// `mysql.unix_socket`, `mysql.ssl_ca`, `mysql.ssl_cert`, `mysql.ssl_key`);
/// Salt's `mysql.pass` is refused with a pointer to `password_file`.
///
/// ```toml
/// [profiles.salt_db]
/// kind = "mysql"
/// host = "127.0.0.1"                  # default "localhost"
/// port = 3306                         # default 3306
/// # hosts = ["db1:3306", "db2:3306", "db3:3306"]  instead of host and port: a cluster, tried in order
/// # socket = "/run/mysqld/mysqld.sock"  instead of host and port
/// user = "salt"
/// password_file = "/etc/returner-host/mysql.pass"
/// database = "salt"
/// # ssl_ca = "ca.pem"; ssl_cert = "client.pem"; ssl_key = "client.key"  (TLS when ssl_ca is set)
/// pool_size = 10                      # connections at most
/// connect_timeout_ms = 5000
/// statement_timeout_ms = 30000
/// max_result_bytes = 16777216         # largest query result handed to a guest
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlProfile {
    /// Server host name or address.
    #[serde(default = "default_host", alias = "mysql.host")]
    pub host: String,
    /// Server port.
    #[serde(default = "default_port", alias = "mysql.port")]
    pub port: u16,
    /// Several servers (`host:port`, or `host` for port 3306) instead of
    /// `host` and `port`: the members of a synchronous cluster (Galera), or
    /// a primary and the servers that take over from it. The host uses one
    /// at a time and moves to the next when it cannot be reached, stops
    /// answering, leaves the cluster's primary component or is read-only.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A unix socket to connect through instead of `host` and `port`.
    #[serde(default, alias = "mysql.unix_socket")]
    pub socket: Option<PathBuf>,
    /// User to log in as.
    #[serde(alias = "mysql.user")]
    pub user: String,
    /// File holding the password of `user` (one line; a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Database (schema) to use; `db.table` names must name it.
    #[serde(alias = "mysql.db")]
    pub database: String,
    /// CA certificate (PEM) to verify the server with; turns TLS on.
    #[serde(default, alias = "mysql.ssl_ca")]
    pub ssl_ca: Option<PathBuf>,
    /// Client certificate chain (PEM), with `ssl_key`.
    #[serde(default, alias = "mysql.ssl_cert")]
    pub ssl_cert: Option<PathBuf>,
    /// Client private key (PEM), with `ssl_cert`.
    #[serde(default, alias = "mysql.ssl_key")]
    pub ssl_key: Option<PathBuf>,
    /// Connections kept open at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a call waits for a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long one statement may run.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Largest query result, in bytes, handed to a guest.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: u64,
    /// Salt's `mysql.pass`: refused, the password belongs in `password_file`.
    #[serde(default, rename = "mysql.pass", alias = "pass", alias = "password", deserialize_with = "refuse_password")]
    #[doc(hidden)]
    pub inline_password: Option<()>,
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    3306
}
fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_statement_timeout_ms() -> u64 {
    DEFAULT_STATEMENT_TIMEOUT_MS
}
fn default_max_result_bytes() -> u64 {
    DEFAULT_MAX_RESULT_BYTES
}

fn refuse_password<'de, D: Deserializer<'de>>(_: D) -> Result<Option<()>, D::Error> {
    Err(serde::de::Error::custom(
        "a password is never written in the config: put it in a file readable by the host only and name that file in `password_file`",
    ))
}

impl MysqlProfile {
    /// Make the profile's file paths absolute with `abs` (relative to the config file).
    pub fn resolve_paths(&mut self, abs: impl Fn(&Path) -> PathBuf) {
        for path in [&mut self.password_file, &mut self.socket, &mut self.ssl_ca, &mut self.ssl_cert, &mut self.ssl_key] {
            *path = path.as_deref().map(&abs);
        }
    }

    /// What is wrong with the profile's settings, if anything.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.pool_size == 0 {
            return Err(("pool_size", "expected at least 1 connection".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(("connect_timeout_ms", "expected at least 1 ms".into()));
        }
        if self.statement_timeout_ms == 0 {
            return Err(("statement_timeout_ms", "expected at least 1 ms".into()));
        }
        if self.ssl_cert.is_some() != self.ssl_key.is_some() {
            return Err(("ssl_cert", "ssl_cert and ssl_key go together".into()));
        }
        if self.ssl_cert.is_some() && self.ssl_ca.is_none() {
            return Err(("ssl_ca", "a client certificate needs TLS: set ssl_ca too".into()));
        }
        if !self.hosts.is_empty() && self.socket.is_some() {
            return Err(("hosts", "`hosts` and `socket` exclude each other: a cluster is reached over TCP".into()));
        }
        self.servers().map(|_| ())
    }

    /// The servers to use, in order: `hosts`, or `host` and `port`.
    pub fn servers(&self) -> Result<Vec<(String, u16)>, (&'static str, String)> {
        if self.hosts.is_empty() {
            return Ok(vec![(self.host.clone(), self.port)]);
        }
        self.hosts
            .iter()
            .map(|entry| {
                let (host, port) = match entry.rsplit_once(':') {
                    Some((host, port)) if !host.ends_with(':') => {
                        let port = port.parse::<u16>().map_err(|_| ("hosts", format!("`{entry}`: `{port}` is not a port")))?;
                        (host.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
                    }
                    _ => (entry.clone(), default_port()),
                };
                if host.is_empty() {
                    return Err(("hosts", format!("`{entry}` names no host; expected `host:port`")));
                }
                Ok((host, port))
            })
            .collect()
    }
}

/// A SQL verb a grant can allow on a table.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SqlVerb {
    /// SELECT from the table (also as the source of INSERT ... SELECT).
    Select,
    /// INSERT into the table.
    Insert,
    /// UPDATE the table.
    Update,
    /// DELETE from the table.
    Delete,
    /// CREATE TABLE of exactly this table.
    Create,
}

/// A returner's MySQL grant: a profile, the verbs allowed per table, and
/// how many of the profile's connections the returner may hold at once
/// (default: half the pool, rounded up, so one returner cannot take it all).
///
/// ```toml
/// [returners.mysql.grants.mysql]
/// profile = "salt_db"
/// tables = { jids = ["select", "insert"], salt_returns = ["select", "insert"] }
/// max_connections = 5
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MysqlGrant {
    /// Name of a `mysql` profile.
    pub profile: String,
    /// Table name to the verbs allowed on it.
    pub tables: BTreeMap<String, Vec<SqlVerb>>,
    /// Connections of the profile's pool the returner may use at once.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl MysqlGrant {
    /// Connections the returner may hold at once on `profile`.
    pub fn connections(&self, profile: &MysqlProfile) -> usize {
        self.max_connections.unwrap_or(profile.pool_size.div_ceil(2)).max(1)
    }

    /// What is wrong with the grant on `profile`, if anything: the key and why.
    pub fn validate(&self, profile: &MysqlProfile) -> Result<(), (String, String)> {
        if let Some(n) = self.max_connections
            && !(1..=profile.pool_size).contains(&n)
        {
            return Err((
                "max_connections".into(),
                format!("expected 1 to the profile's pool_size ({}), got {n}", profile.pool_size),
            ));
        }
        for table in self.tables.keys() {
            if !sql::is_plain_name(table) {
                return Err((
                    format!("tables.{table}"),
                    "a table name of A-Z, a-z, 0-9, `_` and `$` only (no statement can name another)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// MySQL pools by profile name, shared by every call. Each pool is created
/// on first use (the password file is read then), so a host whose MySQL is
/// down still starts and serves its other returners. Beside them, what each
/// returner's calls share, resolved on its first call.
#[derive(Clone, Default)]
pub struct MysqlBackends {
    pools: Arc<BTreeMap<String, Arc<dyn SqlClient>>>,
    profiles: Arc<BTreeMap<String, MysqlProfile>>,
    returners: Arc<Mutex<HashMap<String, Arc<Granted>>>>,
}

impl std::fmt::Debug for MysqlBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlBackends").field("profiles", &self.pools.keys().collect::<Vec<_>>()).finish()
    }
}

impl MysqlBackends {
    /// Prepare a pool for every `mysql` profile.
    pub fn from_profiles(profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        let mut pools: BTreeMap<String, Arc<dyn SqlClient>> = BTreeMap::new();
        let mut mysql = BTreeMap::new();
        for (name, profile) in profiles {
            if let Profile::Mysql(p) = profile {
                pools.insert(name.clone(), Arc::new(client::MysqlPool::new(name, p.clone())));
                mysql.insert(name.clone(), p.clone());
            }
        }
        Ok(Self { pools: Arc::new(pools), profiles: Arc::new(mysql), returners: Arc::default() })
    }

    /// Backends with the given clients by profile name (tests swap the backend this way).
    pub fn with_clients(clients: BTreeMap<String, Arc<dyn SqlClient>>) -> Self {
        Self { pools: Arc::new(clients), ..Self::default() }
    }

    /// What the calls of `returner` under `grant` share: made on its first
    /// call, and made anew when its grant changes (a reload), so a call
    /// never runs on a revoked grant's slots or checked statements.
    fn granted(&self, returner: &str, grant: &MysqlGrant) -> Arc<Granted> {
        let mut returners = self.returners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(granted) = returners.get(returner)
            && granted.grant == *grant
        {
            return granted.clone();
        }
        let connections = self.profiles.get(&grant.profile).map_or(DEFAULT_POOL_SIZE.div_ceil(2), |p| grant.connections(p));
        let granted = Arc::new(Granted {
            grant: grant.clone(),
            connections,
            slots: Arc::new(Semaphore::new(connections)),
            checked: Mutex::new(HashMap::new()),
        });
        returners.insert(returner.to_owned(), granted.clone());
        granted
    }
}

/// Statements a returner has passed the check, kept to skip checking them
/// again (a returner sends a handful of texts, again and again).
/// Per host function, guest text to the text sent (looked up by `&str`,
/// so a hit allocates nothing).
pub(crate) type CheckedStatements = HashMap<sql::Function, HashMap<String, String>>;

/// Texts kept per returner at most; past it the cache starts over.
const CHECKED_STATEMENTS: usize = 256;
/// Longest text kept: bounds the cache at about 2 MiB per returner.
const CHECKED_STATEMENT_BYTES: usize = 4 * 1024;

/// One returner's grant, resolved once and shared by its calls: its
/// connection slots on the profile and the statements it already passed.
pub(crate) struct Granted {
    grant: MysqlGrant,
    connections: usize,
    slots: Arc<Semaphore>,
    checked: Mutex<CheckedStatements>,
}

impl Granted {
    /// The text to send for `sql`, if this grant passed it before.
    fn checked(&self, function: sql::Function, sql: &str) -> Option<String> {
        let checked = self.checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        checked.get(&function)?.get(sql).cloned()
    }

    /// Remember that `sql` passed as `sent`.
    fn remember(&self, function: sql::Function, sql: &str, sent: &str) {
        if sql.len() > CHECKED_STATEMENT_BYTES {
            return;
        }
        let mut checked = self.checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if checked.values().map(HashMap::len).sum::<usize>() >= CHECKED_STATEMENTS {
            checked.clear();
        }
        checked.entry(function).or_default().insert(sql.to_owned(), sent.to_owned());
    }
}

/// Per-call MySQL state.
pub struct MysqlCtx {
    returner: Arc<str>,
    granted: Option<Arc<Granted>>,
    client: Option<Arc<dyn SqlClient>>,
    /// When the call ends: no statement runs on the server past it.
    deadline: Instant,
    /// The call's connection and its slot, from its first statement until
    /// the call ends (this state is dropped with the call's store, however
    /// the call ended: answer, error, trap or deadline).
    held: Option<Held>,
    /// When its statements may reach the server.
    turn: Turn,
}

/// A call's session and the returner's connection slot it occupies. The
/// session is dropped first, so its connection is back in the pool before
/// the slot frees.
struct Held {
    session: Box<dyn SqlSession>,
    _slot: OwnedSemaphorePermit,
}

impl MysqlCtx {
    /// State for one call of `returner` ending at `deadline`, with its grant if it has one.
    pub fn new(returner: Arc<str>, grant: Option<&MysqlGrant>, backends: &MysqlBackends, deadline: Instant) -> Self {
        let client = grant.and_then(|g| backends.pools.get(&g.profile).cloned());
        let granted = grant.map(|g| backends.granted(&returner, g));
        Self { returner, granted, client, deadline, held: None, turn: Turn::now() }
    }

    /// The same state, its statements waiting for `turn`.
    pub fn in_turn(self, turn: Turn) -> Self {
        Self { turn, ..self }
    }

    /// When the call ends: its deadline, moved on by its wait for its turn.
    fn deadline(&self) -> Instant {
        self.turn.extended(self.deadline)
    }
}

struct HasMysql;
impl HasData for HasMysql {
    type Data<'a> = &'a mut MysqlCtx;
}

/// Link `salt:returner/mysql`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut MysqlCtx,
) -> wasmtime::Result<()> {
    mysql::add_to_linker::<T, HasMysql>(linker, get)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{HostConfig, Overrides, Profile};

    fn parse(profile: &str) -> Result<HostConfig, String> {
        let text = format!("[profiles.db]\nkind = \"mysql\"\n{profile}");
        HostConfig::parse(&text, Path::new("t.toml"), Path::new("/etc/rh"), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn salts_option_names_map_onto_the_profile() {
        let cfg = parse("\"mysql.host\" = \"db1\"\n\"mysql.port\" = 3307\n\"mysql.user\" = \"u\"\n\"mysql.db\" = \"salt\"\n\"mysql.ssl_ca\" = \"ca.pem\"\npassword_file = \"pw\"\n").unwrap();
        let Some(Profile::Mysql(p)) = cfg.profiles.get("db") else { panic!("no mysql profile") };
        assert_eq!((p.host.as_str(), p.port, p.user.as_str(), p.database.as_str()), ("db1", 3307, "u", "salt"));
        assert_eq!(p.ssl_ca.as_deref(), Some(Path::new("/etc/rh/ca.pem")));
        assert_eq!(p.password_file.as_deref(), Some(Path::new("/etc/rh/pw")));
        assert_eq!(p.pool_size, super::DEFAULT_POOL_SIZE);
    }

    #[test]
    fn a_cluster_is_a_list_of_servers_in_order() {
        let cfg = parse("hosts = [\"db1:3307\", \"db2\", \"[::1]:3308\"]\nuser = \"u\"\ndatabase = \"d\"\n").unwrap();
        let Some(Profile::Mysql(p)) = cfg.profiles.get("db") else { panic!("no mysql profile") };
        assert_eq!(p.servers().unwrap(), [("db1".to_owned(), 3307), ("db2".to_owned(), 3306), ("::1".to_owned(), 3308)]);
        let err = parse("hosts = [\"db1:x\"]\nuser = \"u\"\ndatabase = \"d\"\n").unwrap_err();
        assert!(err.contains("profiles.db.hosts") && err.contains("not a port"), "{err}");
        let err = parse("hosts = [\"db1\"]\nsocket = \"/run/m.sock\"\nuser = \"u\"\ndatabase = \"d\"\n").unwrap_err();
        assert!(err.contains("exclude each other"), "{err}");
    }

    #[test]
    fn a_password_in_the_config_is_refused_with_a_pointer_to_password_file() {
        let err = parse("user = \"u\"\ndatabase = \"d\"\n\"mysql.pass\" = \"hunter2\"\n").unwrap_err();
        assert!(err.contains("password_file"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_pool_and_tls_settings_are_named() {
        let err = parse("user = \"u\"\ndatabase = \"d\"\npool_size = 0\n").unwrap_err();
        assert!(err.contains("profiles.db.pool_size"), "{err}");
        let err = parse("user = \"u\"\ndatabase = \"d\"\nssl_cert = \"c.pem\"\n").unwrap_err();
        assert!(err.contains("ssl_key go together"), "{err}");
    }
}
