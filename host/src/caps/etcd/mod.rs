//! The `etcd` capability: keys under one granted prefix of one etcd profile.
//!
//! The grant and profile types are parsed and validated here so a config in
//! the documented shape loads; this build has no etcd client, so every call
//! answers `denied` (deny by default) and is audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::etcd::{self, KeyValue};
use crate::bindings::GuestError;
use crate::caps::audit;
use crate::config::Profile;

/// How the host reaches an etcd cluster. Credentials stay host-side.
///
/// ```toml
/// [profiles.etcd_main]
/// kind = "etcd"
/// endpoints = ["http://127.0.0.1:2379"]
/// username = "salt"
/// password_file = "/etc/returner-host/etcd.pass"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdProfile {
    /// Client URLs of the cluster members.
    pub endpoints: Vec<String>,
    /// User for etcd authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password of `username`.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
}

/// What an etcd grant lets a returner do.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EtcdOp {
    /// get, get-prefix
    Read,
    /// put, put-many, put-if-absent
    Write,
    /// delete
    Delete,
}

/// A returner's etcd grant.
///
/// ```toml
/// [returners.etcd.grants.etcd]
/// profile = "etcd_main"
/// root = "/salt/return"
/// ops = ["read", "write", "delete"]
/// max_ttl_seconds = 86400
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdGrant {
    /// Name of an `etcd` profile.
    pub profile: String,
    /// Key prefix the returner's keys live under.
    pub root: String,
    /// Operations allowed.
    pub ops: Vec<EtcdOp>,
    /// The longest lease a returner may ask for.
    #[serde(default)]
    pub max_ttl_seconds: Option<u64>,
}

/// etcd clients by profile name, shared by every call.
#[derive(Clone, Debug, Default)]
pub struct EtcdBackends {}

impl EtcdBackends {
    /// Prepare clients for the `etcd` profiles.
    pub fn from_profiles(_profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        Ok(Self {})
    }
}

/// Per-call etcd state.
#[derive(Clone, Debug)]
pub struct EtcdCtx {
    returner: Arc<str>,
    grant: Option<Arc<EtcdGrant>>,
}

impl EtcdCtx {
    /// State for one call of `returner`, holding its grant if it has one.
    pub fn new(returner: Arc<str>, grant: Option<Arc<EtcdGrant>>, _backends: &EtcdBackends) -> Self {
        Self { returner, grant }
    }

    /// Guest's fault or admin's choice: no usable grant. Audited.
    fn deny<T>(&self, operation: &str, key: &str) -> wasmtime::Result<Result<T, GuestError>> {
        audit::denied(&self.returner, "etcd", operation, key);
        let why = match &self.grant {
            None => "it has no etcd grant",
            Some(_) => "etcd access is not available in this version of returner-host",
        };
        Ok(Err(GuestError::Denied(format!(
            "etcd {operation} of key `{key}` denied for returner `{}`: {why}",
            self.returner
        ))))
    }
}

impl etcd::Host for EtcdCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, GuestError>> {
        self.deny("get", &key)
    }

    async fn get_prefix(
        &mut self,
        prefix: String,
        _limit: u32,
    ) -> wasmtime::Result<Result<Vec<KeyValue>, GuestError>> {
        self.deny("get-prefix", &prefix)
    }

    async fn put(
        &mut self,
        key: String,
        _value: Vec<u8>,
        _ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        self.deny("put", &key)
    }

    async fn put_many(
        &mut self,
        items: Vec<KeyValue>,
        _ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let first = items.first().map(|kv| kv.key.as_str()).unwrap_or("");
        self.deny("put-many", first)
    }

    async fn put_if_absent(
        &mut self,
        key: String,
        _value: Vec<u8>,
        _ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<bool, GuestError>> {
        self.deny("put-if-absent", &key)
    }

    async fn delete(&mut self, key: String, _prefix: bool) -> wasmtime::Result<Result<u64, GuestError>> {
        self.deny("delete", &key)
    }
}

struct HasEtcd;
impl HasData for HasEtcd {
    type Data<'a> = &'a mut EtcdCtx;
}

/// Link `salt:returner/etcd`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut EtcdCtx,
) -> wasmtime::Result<()> {
    etcd::add_to_linker::<T, HasEtcd>(linker, get)
}
