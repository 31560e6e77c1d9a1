//! The backend behind the etcd host functions: a small trait over the five
//! things they do with full keys, so tests can swap the backend, and its
//! implementation with `etcd-client`, one per profile, shared by every call.
//!
//! The live client connects on first use and again after a failed connect;
//! once connected, the gRPC channel reconnects by itself when a member comes
//! back. Every request is bounded by the profile's timeouts, so an
//! unreachable cluster is a `backend` error naming the endpoints, never a
//! hang.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp,
};
use tokio::sync::Mutex;

use super::config::EtcdProfile;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest range-read answer accepted, in bytes. gRPC's 4 MiB default is too
/// small for `get_jids` over a busy job tree; the guest's memory cap bounds
/// what it can hold anyway.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A failed etcd operation, by whose fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The cluster is unreachable, refused our credentials, or failed: the
    /// admin's or the cluster's problem. Becomes `backend`.
    Unavailable(String),
    /// etcd refused the request itself (too large, too many operations,
    /// duplicate keys): the guest's problem. Becomes `invalid`.
    Refused(String),
}

/// Key/value pairs as etcd holds them.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What the etcd host functions need from a cluster. Keys are full keys,
/// already confined to the grant's root.
pub trait EtcdClient: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>>;
    /// Keys in `[start, end)`, in key order, at most `limit` (≥ 1).
    fn range(&self, start: Vec<u8>, end: Vec<u8>, limit: u32) -> BoxFuture<'_, Result<Pairs, BackendError>>;
    /// Write every pair in one transaction, under one new lease of `ttl` seconds when given.
    fn put_many(&self, items: Pairs, ttl: Option<u32>) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Write `key` only if it does not exist; whether it was written.
    fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, ttl: Option<u32>) -> BoxFuture<'_, Result<bool, BackendError>>;
    /// Delete `key`, or every key in `[key, end)`; how many were deleted.
    fn delete(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> BoxFuture<'_, Result<u64, BackendError>>;
}

/// An `etcd-client` connection for one profile, made on first use.
pub struct LiveClient {
    profile: String,
    endpoints: Vec<String>,
    options: ConnectOptions,
    connect_timeout: Duration,
    request_timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl fmt::Debug for LiveClient {
    // ConnectOptions' own Debug prints the password: never show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveClient")
            .field("profile", &self.profile)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl LiveClient {
    /// A client for `profile` named `name`, reading its password and TLS
    /// files now so a missing file fails at start, not at the first return.
    pub fn new(name: &str, profile: &EtcdProfile) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("profile `{name}`: reading {what} {}", path.display()))
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(profile.connect_timeout())
            .with_timeout(profile.request_timeout())
            .with_auto_token_refresh(true);
        if let Some(user) = &profile.username {
            let password = match &profile.password_file {
                Some(path) => {
                    let bytes = read(path, "the password file")?;
                    String::from_utf8(bytes)
                        .map_err(|_| anyhow::anyhow!("profile `{name}`: the password file {} is not UTF-8", path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned()
                }
                None => String::new(),
            };
            options = options.with_user(user.clone(), password);
        }
        if profile.uses_tls() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &profile.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "the CA file")?));
            }
            if let (Some(cert), Some(key)) = (&profile.cert_file, &profile.key_file) {
                tls = tls.identity(Identity::from_pem(read(cert, "the client certificate")?, read(key, "the client key")?));
            }
            options = options.with_tls(tls);
        }
        Ok(Self {
            profile: name.to_owned(),
            endpoints: profile.endpoint_urls(),
            options,
            connect_timeout: profile.connect_timeout(),
            request_timeout: profile.request_timeout(),
            client: Mutex::new(None),
        })
    }

    fn unavailable(&self, why: impl fmt::Display) -> BackendError {
        BackendError::Unavailable(format!("etcd profile `{}` at {}: {why}", self.profile, self.endpoints.join(", ")))
    }

    /// The shared client, connecting first if no connect has succeeded yet.
    async fn client(&self) -> Result<Client, BackendError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let connect = Client::connect(&self.endpoints, Some(self.options.clone()));
        let client = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            // Whatever fails while connecting (authenticating included) is the cluster's or the admin's.
            Ok(Err(e)) => return Err(self.unavailable(e)),
            Err(_) => {
                return Err(self.unavailable(format_args!(
                    "no connection within the connect timeout of {} ms",
                    self.connect_timeout.as_millis()
                )));
            }
        };
        tracing::info!(profile = %self.profile, endpoints = ?self.endpoints, "connected to etcd");
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Run one request on the shared client within the request timeout.
    async fn request<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.request_timeout, op(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => Err(self.unavailable(format_args!(
                "no answer within the request timeout of {} ms",
                self.request_timeout.as_millis()
            ))),
        }
    }

    /// etcd's refusals of the request itself are the guest's; the rest is the cluster's.
    fn classify(&self, e: etcd_client::Error) -> BackendError {
        if let etcd_client::Error::GRpcStatus(status) = &e {
            let message = status.message();
            let too_large = message.contains("too large") || message.contains("larger than max");
            if too_large {
                return BackendError::Refused(format!(
                    "etcd refused the request as too large ({message}); etcd's --max-request-bytes is 1.5 MiB unless its admin raised it"
                ));
            }
            let credentials = message.contains("authentication") || message.contains("permission denied");
            if !credentials && matches!(status.code() as i32, GRPC_INVALID_ARGUMENT | GRPC_RESOURCE_EXHAUSTED) {
                return BackendError::Refused(format!("etcd refused the request: {message}"));
            }
            return self.unavailable(format_args!("{:?}: {message}", status.code()));
        }
        self.unavailable(e)
    }
}

/// gRPC status codes (etcd-client does not re-export tonic's `Code`).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

impl EtcdClient for LiveClient {
    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(self.request(move |mut c| async move {
            let resp = c.get(key, None).await?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        }))
    }

    fn range(&self, start: Vec<u8>, end: Vec<u8>, limit: u32) -> BoxFuture<'_, Result<Pairs, BackendError>> {
        Box::pin(self.request(move |c| async move {
            let mut kv = c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
            let options = GetOptions::new().with_range(end).with_limit(i64::from(limit));
            let resp = kv.get(start, Some(options)).await?;
            Ok(resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect())
        }))
    }

    fn put_many(&self, items: Pairs, ttl: Option<u32>) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.request(move |mut c| async move {
            let options = match ttl {
                Some(ttl) => Some(PutOptions::new().with_lease(c.lease_grant(i64::from(ttl), None).await?.id())),
                None => None,
            };
            let ops: Vec<TxnOp> = items.into_iter().map(|(k, v)| TxnOp::put(k, v, options.clone())).collect();
            c.txn(Txn::new().and_then(ops)).await?;
            Ok(())
        }))
    }

    fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, ttl: Option<u32>) -> BoxFuture<'_, Result<bool, BackendError>> {
        Box::pin(self.request(move |mut c| async move {
            let options = match ttl {
                Some(ttl) => Some(PutOptions::new().with_lease(c.lease_grant(i64::from(ttl), None).await?.id())),
                None => None,
            };
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, options)]);
            Ok(c.txn(txn).await?.succeeded())
        }))
    }

    fn delete(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> BoxFuture<'_, Result<u64, BackendError>> {
        Box::pin(self.request(move |mut c| async move {
            let options = end.map(|end| DeleteOptions::new().with_range(end));
            let deleted = c.delete(key, options).await?.deleted();
            Ok(u64::try_from(deleted).unwrap_or(0))
        }))
    }
}
