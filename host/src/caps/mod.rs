//! Capabilities: everything a guest can reach beyond its own memory, each
//! behind a grant from the host config. Deny by default: a returner with no
//! grant for a capability gets `denied` from every call, and an audit event.
//!
//! One module per capability owns its grant type, its check, its host
//! functions and its backend client.

pub mod audit;
pub mod config;
pub mod etcd;
pub mod fs;
pub mod http;
pub mod log;
pub mod mysql;
pub mod turn;
pub mod wasi;

use serde::Deserialize;

/// The grants of one returner, as written in the config under
/// `[returners.NAME.grants.*]`. A capability without a grant is denied.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Keys under one prefix of an etcd profile.
    #[serde(default)]
    pub etcd: Option<etcd::EtcdGrant>,
    /// Tables and verbs of a MySQL profile.
    #[serde(default)]
    pub mysql: Option<mysql::MysqlGrant>,
    /// One host directory.
    #[serde(default)]
    pub fs: Option<fs::FsGrant>,
    /// Methods and paths of an http profile.
    #[serde(default)]
    pub http: Option<http::HttpGrant>,
}

impl Grants {
    /// One line per grant, as `check` and `test` print them:
    /// `fs /var/cache/salt (rw)`, `etcd main:/salt/return`,
    /// `mysql salt_db (3 tables)`, `http splunk (POST /services/collector/event)`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(fs) = &self.fs {
            out.push(format!("fs {} ({:?})", fs.dir.display(), fs.mode).to_lowercase());
        }
        if let Some(etcd) = &self.etcd {
            out.push(format!("etcd {}:{}", etcd.profile, etcd.root));
        }
        if let Some(mysql) = &self.mysql {
            out.push(format!("mysql {} ({} tables)", mysql.profile, mysql.tables.len()));
        }
        if let Some(http) = &self.http {
            let methods: Vec<&str> = http.methods.iter().map(|m| m.as_str()).collect();
            out.push(format!("http {} ({} {})", http.profile, methods.join(","), http.paths.join(" ")));
        }
        out
    }
}

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;

/// A named connection profile (`[profiles.NAME]`, its `kind` naming the
/// capability that owns it); credentials live here, host-side only.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Profile {
    /// An etcd cluster.
    Etcd(etcd::EtcdProfile),
    /// A MySQL or MariaDB server.
    Mysql(mysql::MysqlProfile),
    /// An HTTP endpoint.
    Http(http::HttpProfile),
}

impl Profile {
    /// The `kind` it was written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Profile::Etcd(_) => "etcd",
            Profile::Mysql(_) => "mysql",
            Profile::Http(_) => "http",
        }
    }
}

/// Connections to the backends (etcd clusters, MySQL servers), built once
/// from the config's profiles and shared by every call of every returner.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    /// etcd clients by profile name.
    pub etcd: etcd::EtcdBackends,
    /// MySQL pools by profile name.
    pub mysql: mysql::MysqlBackends,
    /// HTTP clients by profile name.
    pub http: http::HttpBackends,
}

impl Backends {
    /// Prepare a client for every profile (connections are made on first use).
    pub fn from_profiles(profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        Ok(Self {
            etcd: etcd::EtcdBackends::from_profiles(profiles)?,
            mysql: mysql::MysqlBackends::from_profiles(profiles)?,
            http: http::HttpBackends::from_profiles(profiles)?,
        })
    }
}

/// Per-call state of every `salt:returner` host interface.
pub struct CallCaps {
    options: config::OptionsCtx,
    log: log::LogCtx,
    etcd: etcd::EtcdCtx,
    mysql: mysql::MysqlCtx,
    http: http::HttpCtx,
    network: wasi::NetworkCtx,
    fs: fs::FsCtx,
}

impl CallCaps {
    /// State for one call of `returner` with its grants and options, ending
    /// at `deadline`; `resolved` holds what was resolved of its grants when
    /// it was loaded. Its etcd, MySQL and HTTP requests wait for `turn`.
    pub fn new(
        returner: Arc<str>,
        grants: &Grants,
        options: Arc<serde_json::Map<String, serde_json::Value>>,
        backends: &Backends,
        deadline: std::time::Instant,
        resolved: &ResolvedGrants,
        turn: turn::Turn,
    ) -> Self {
        Self {
            options: config::OptionsCtx::new(options),
            log: log::LogCtx::new(returner.clone()),
            etcd: etcd::EtcdCtx::new(returner.clone(), resolved.etcd.clone(), &backends.etcd).in_turn(turn.clone()),
            mysql: mysql::MysqlCtx::new(returner.clone(), grants.mysql.as_ref(), &backends.mysql, deadline).in_turn(turn.clone()),
            http: http::HttpCtx::new(returner.clone(), resolved.http.clone(), &backends.http, deadline).in_turn(turn),
            network: wasi::NetworkCtx::new(returner.clone()),
            fs: fs::FsCtx::new(returner, resolved.fs_usage.clone()),
        }
    }

    /// The call's fs state.
    pub fn fs(&self) -> &fs::FsCtx {
        &self.fs
    }
}

/// What is resolved of a returner's grants once, when it is loaded, and
/// shared by all its calls.
#[derive(Clone, Debug, Default)]
pub struct ResolvedGrants {
    /// Its read-write `fs` grant's usage ([`fs::FsGrant::measure`]).
    pub fs_usage: Option<Arc<fs::DirUsage>>,
    /// Its etcd grant.
    pub etcd: Option<Arc<etcd::EtcdGrant>>,
    /// Its http grant, with the concurrency and rate its calls share.
    pub http: Option<Arc<http::HttpGranted>>,
}

/// Access to the [`CallCaps`] inside a store's data.
pub trait CapsView {
    /// The call's capability state.
    fn caps(&mut self) -> &mut CallCaps;
}

/// The `salt:returner` interfaces [`add_to_linker`] links, without versions.
pub const INTERFACES: &[&str] = &[
    "salt:returner/types",
    "salt:returner/config",
    "salt:returner/log",
    "salt:returner/etcd",
    "salt:returner/mysql",
    "salt:returner/http",
];

/// Whether an import name (`pkg:ns/iface@version`) is an interface the host
/// links, at a compatible version.
pub fn is_linked(import: &str) -> bool {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    let compatible = |prefix: &str| version.starts_with(prefix);
    (INTERFACES.contains(&name) && compatible("0.1.")) || (wasi::INTERFACES.contains(&name) && compatible("0.2."))
}

/// Link every `salt:returner` host interface.
pub fn add_to_linker<T: CapsView + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::salt::returner::types::add_to_linker::<T, HasTypes>(linker, |_| TypesCtx)?;
    config::add_to_linker(linker, |t| &mut t.caps().options)?;
    log::add_to_linker(linker, |t| &mut t.caps().log)?;
    etcd::add_to_linker(linker, |t| &mut t.caps().etcd)?;
    mysql::add_to_linker(linker, |t| &mut t.caps().mysql)?;
    http::add_to_linker(linker, |t| &mut t.caps().http)?;
    Ok(())
}

/// `salt:returner/types` has no functions; the linker still needs the instance.
struct TypesCtx;
impl crate::bindings::salt::returner::types::Host for TypesCtx {}
struct HasTypes;
impl wasmtime::component::HasData for HasTypes {
    type Data<'a> = TypesCtx;
}
