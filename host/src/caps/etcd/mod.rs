//! The `etcd` capability: keys under one granted prefix of one etcd profile.
//!
//! - `config`: the profile (host-side connection settings, credentials) and
//!   the grant (root, operations, longest lease) as written in the config;
//! - `grant`: the check and the key mapping, pure and unit-tested;
//! - `client`: a trait over the backend and its `etcd-client` implementation;
//! - `host`: the WIT host functions, each starting with the grant check.
//!
//! Deny by default: without a grant every call answers `denied`, and every
//! denial is audited once. Nothing else in the host imports `etcd-client`.

mod client;
mod config;
mod grant;
mod host;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::etcd;
use super::Profile;
use super::turn::Turn;

pub use client::{BackendError, BoxFuture, EtcdClient, LiveClient, Pairs};
pub use config::{DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT_MS, EtcdGrant, EtcdOp, EtcdProfile};
pub use grant::{MAX_KEY_BYTES, normalise_root};

/// etcd clients by profile name, built once per host and shared by every
/// call of every returner. Cheap to clone.
#[derive(Clone, Default)]
pub struct EtcdBackends {
    clients: BTreeMap<String, Arc<dyn EtcdClient>>,
}

impl fmt::Debug for EtcdBackends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackends").field("profiles", &self.clients.keys().collect::<Vec<_>>()).finish()
    }
}

impl EtcdBackends {
    /// A client for every `etcd` profile; each connects on first use.
    pub fn from_profiles(profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        let mut clients: BTreeMap<String, Arc<dyn EtcdClient>> = BTreeMap::new();
        for (name, profile) in profiles {
            if let Profile::Etcd(p) = profile {
                clients.insert(name.clone(), Arc::new(LiveClient::new(name, p)?));
            }
        }
        Ok(Self { clients })
    }

    /// Backends with the given clients, e.g. in-memory ones in tests.
    pub fn with_clients(clients: BTreeMap<String, Arc<dyn EtcdClient>>) -> Self {
        Self { clients }
    }
}

/// Leases of distinct TTLs one call may hold. The call's keys of one TTL
/// share one lease; without this bound a guest cycling through TTLs would
/// still fill etcd's lease table, one lease per put.
pub const MAX_LEASES_PER_CALL: usize = 16;

/// Most transactions one `put-batches` call sends. A delivered batch of 256
/// returns needs 16 to 40 of them; this bounds the keys one call holds in
/// the host at once.
pub const MAX_BATCHES_PER_CALL: usize = 1024;

/// Transactions of one `put-batches` call in flight at once: enough for
/// etcd to commit a batch of returns in a few raft rounds, few enough that
/// one call does not flood its connection.
pub const BATCHES_IN_FLIGHT: usize = 16;

/// Per-call etcd state: the returner's grant, the clients serving it, and
/// the leases the call has granted so far.
#[derive(Clone)]
pub struct EtcdCtx {
    returner: Arc<str>,
    grant: Option<Arc<EtcdGrant>>,
    read: Option<Arc<dyn EtcdClient>>,
    write: Option<Arc<dyn EtcdClient>>,
    /// Lease id by TTL in seconds, granted on the call's first put of that TTL.
    leases: HashMap<u32, i64>,
    /// When its requests may reach etcd.
    turn: Turn,
}

impl fmt::Debug for EtcdCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCtx").field("returner", &self.returner).field("grant", &self.grant).finish_non_exhaustive()
    }
}

impl EtcdCtx {
    /// State for one call of `returner`, holding its grant if it has one.
    pub fn new(returner: Arc<str>, grant: Option<Arc<EtcdGrant>>, backends: &EtcdBackends) -> Self {
        let client = |op| grant.as_ref().and_then(|g| backends.clients.get(g.profile_for(op)).cloned());
        Self { read: client(EtcdOp::Read), write: client(EtcdOp::Write), returner, grant, leases: HashMap::new(), turn: Turn::now() }
    }

    /// The same state, its requests waiting for `turn`.
    pub fn in_turn(self, turn: Turn) -> Self {
        Self { turn, ..self }
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
