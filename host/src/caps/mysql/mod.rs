//! The `mysql` capability: SQL on granted tables of one MySQL profile,
//! checked per table and verb.
//!
//! The grant and profile types are parsed and validated here so a config in
//! the documented shape loads; this build has no MySQL client, so every call
//! answers `denied` (deny by default) and is audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::mysql::{self, ExecResult, Rows, Value};
use crate::bindings::GuestError;
use crate::caps::audit;
use crate::config::Profile;

/// How the host reaches a MySQL or MariaDB server. Credentials stay host-side.
///
/// ```toml
/// [profiles.salt_db]
/// kind = "mysql"
/// host = "127.0.0.1"
/// port = 3306
/// user = "salt"
/// password_file = "/etc/returner-host/mysql.pass"
/// database = "salt"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlProfile {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User to log in as.
    pub user: String,
    /// File holding the password of `user`.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// Database (schema) to use.
    pub database: String,
}

fn default_port() -> u16 {
    3306
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

/// A returner's MySQL grant: a profile and the verbs allowed per table.
///
/// ```toml
/// [returners.mysql.grants.mysql]
/// profile = "salt_db"
/// tables = { jids = ["select", "insert"], salt_returns = ["select", "insert"] }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlGrant {
    /// Name of a `mysql` profile.
    pub profile: String,
    /// Table name to the verbs allowed on it.
    pub tables: BTreeMap<String, Vec<SqlVerb>>,
}

/// MySQL pools by profile name, shared by every call.
#[derive(Clone, Debug, Default)]
pub struct MysqlBackends {}

impl MysqlBackends {
    /// Prepare pools for the `mysql` profiles.
    pub fn from_profiles(_profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        Ok(Self {})
    }
}

/// Per-call MySQL state.
#[derive(Clone, Debug)]
pub struct MysqlCtx {
    returner: Arc<str>,
    grant: Option<Arc<MysqlGrant>>,
}

impl MysqlCtx {
    /// State for one call of `returner`, holding its grant if it has one.
    pub fn new(returner: Arc<str>, grant: Option<Arc<MysqlGrant>>, _backends: &MysqlBackends) -> Self {
        Self { returner, grant }
    }

    /// Guest's fault or admin's choice: no usable grant. Audited.
    fn deny<T>(&self, operation: &str, sql: &str) -> wasmtime::Result<Result<T, GuestError>> {
        let target: String = sql.chars().take(200).collect();
        audit::denied(&self.returner, "mysql", operation, &target);
        let why = match &self.grant {
            None => "it has no mysql grant",
            Some(_) => "MySQL access is not available in this version of returner-host",
        };
        Ok(Err(GuestError::Denied(format!(
            "mysql {operation} of `{target}` denied for returner `{}`: {why}",
            self.returner
        ))))
    }
}

impl mysql::Host for MysqlCtx {
    async fn query(&mut self, sql: String, _params: Vec<Value>) -> wasmtime::Result<Result<Rows, GuestError>> {
        self.deny("query", &sql)
    }

    async fn execute(
        &mut self,
        sql: String,
        _params: Vec<Value>,
    ) -> wasmtime::Result<Result<ExecResult, GuestError>> {
        self.deny("execute", &sql)
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
