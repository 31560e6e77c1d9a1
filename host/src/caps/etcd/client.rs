//! The backend behind the etcd host functions: a small trait over the five
//! things they do with full keys, so tests can swap the backend, and its
//! implementation with `etcd-client`, one per profile, shared by every call.
//!
//! The live client holds one connection per member endpoint, each made on
//! first use and again after a failed connect; once connected, a member's
//! gRPC channel reconnects by itself when the member comes back. A request
//! that a member cannot serve is tried on the next one, so a cluster rides
//! out the loss of any minority of its members, the leader included. Every
//! request is bounded by the profile's request timeout, so an unreachable
//! cluster is a `backend` error naming the endpoints, never a hang.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, TxnOpResponse,
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
    /// The lease a write named is gone (it expired during a long call):
    /// grant another and write again.
    LeaseGone(String),
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
    /// A new lease of `ttl` seconds (≥ 1); its id.
    fn grant_lease(&self, ttl: u32) -> BoxFuture<'_, Result<i64, BackendError>>;
    /// Write every pair in one transaction, under `lease` when given.
    fn put_many(&self, items: Arc<Pairs>, lease: Option<i64>) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Write `key` only if it does not exist, under `lease` when given;
    /// whether it was written.
    fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) -> BoxFuture<'_, Result<bool, BackendError>>;
    /// Delete `key`, or every key in `[key, end)`; how many were deleted.
    fn delete(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> BoxFuture<'_, Result<u64, BackendError>>;
}

/// An `etcd-client` connection to each member of one profile's cluster,
/// each made on first use.
///
/// A request goes to the member that answered last. When that member is
/// unreachable or cannot serve it (killed, partitioned, no leader, leader
/// changing), the request is tried again on the next member, and round the
/// members again after a short pause, until one answers or the profile's
/// request timeout is spent. A failure that another member would repeat
/// (bad credentials, a TLS mismatch, a request etcd refuses) ends at once.
pub struct LiveClient {
    profile: String,
    endpoints: Vec<String>,
    options: ConnectOptions,
    connect_timeout: Duration,
    request_timeout: Duration,
    tls_files: TlsFiles,
    /// One lazily connected client per endpoint, in `endpoints` order.
    members: Vec<Mutex<Option<Client>>>,
    /// The member that answered last: where the next request goes first.
    preferred: AtomicUsize,
}

/// The TLS files of a profile, for messages that tell the admin which to fix.
#[derive(Clone, Debug, Default)]
struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
}

/// The first pause before going round the members again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_millis(250);

impl fmt::Debug for LiveClient {
    // ConnectOptions' own Debug prints the password: never show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveClient")
            .field("profile", &self.profile)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// How one attempt on one member failed.
enum Failure {
    /// Another member, or the same one a moment later, may serve it.
    Retry(String),
    /// Every member would answer the same.
    Final(BackendError),
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
            .with_auto_token_refresh(true)
            // A member that lost its leader says so at once instead of
            // holding the request, so the next member can be tried.
            .with_require_leader(true);
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
        let mut tls_files = TlsFiles::default();
        if profile.uses_tls() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &profile.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "the CA file")?));
                tls_files.ca = Some(ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&profile.cert_file, &profile.key_file) {
                tls = tls.identity(Identity::from_pem(read(cert, "the client certificate")?, read(key, "the client key")?));
                tls_files.cert = Some(cert.display().to_string());
            }
            options = options.with_tls(tls);
        }
        let endpoints = profile.endpoint_urls();
        Ok(Self {
            profile: name.to_owned(),
            members: endpoints.iter().map(|_| Mutex::new(None)).collect(),
            endpoints,
            options,
            connect_timeout: profile.connect_timeout(),
            request_timeout: profile.request_timeout(),
            tls_files,
            preferred: AtomicUsize::new(0),
        })
    }

    fn unavailable(&self, why: impl fmt::Display) -> BackendError {
        BackendError::Unavailable(format!("etcd profile `{}` at {}: {why}", self.profile, self.endpoints.join(", ")))
    }

    /// The client of member `index`, connecting first if no connect to it
    /// has succeeded yet; waiting for another call's connect counts too.
    async fn member(&self, index: usize, budget: Duration) -> Result<Client, Failure> {
        let limit = self.connect_timeout.min(budget);
        let endpoint = &self.endpoints[index];
        let connected = tokio::time::timeout(limit, async {
            let mut slot = self.members[index].lock().await;
            if let Some(client) = &*slot {
                return Ok(client.clone());
            }
            let client = Client::connect([endpoint], Some(self.options.clone())).await?;
            tracing::info!(profile = %self.profile, endpoint = %endpoint, "connected to etcd");
            *slot = Some(client.clone());
            Ok::<_, etcd_client::Error>(client)
        });
        match connected.await {
            Ok(Ok(client)) => Ok(client),
            // Whatever fails while connecting (authenticating included) is the cluster's or the admin's.
            Ok(Err(e)) => Err(self.failure(e)),
            Err(_) => Err(Failure::Retry(format!("no connection within {} ms", limit.as_millis()))),
        }
    }

    /// Run one request within the request timeout, on the member that
    /// answered last, then on the others in turn while they cannot serve
    /// it. `op` gets the client and whether this is a retry (an earlier
    /// attempt may have been applied without its answer arriving).
    async fn request<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: Fn(Client, bool) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let members = self.members.len();
        // With several members, one that hangs must leave time for the others.
        let attempt_limit = if members > 1 { self.request_timeout / 2 } else { self.request_timeout };
        let first = self.preferred.load(Ordering::Relaxed) % members;
        let mut pause = FIRST_PAUSE;
        let mut errors: Vec<Option<String>> = vec![None; members];
        let mut attempt = 0usize;
        loop {
            let index = (first + attempt) % members;
            let remaining = self.request_timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(self.timed_out(&errors));
            }
            let failure = match self.member(index, remaining).await {
                Err(failure) => failure,
                Ok(client) => {
                    let limit = attempt_limit.min(self.request_timeout.saturating_sub(started.elapsed()));
                    match tokio::time::timeout(limit, op(client, attempt > 0)).await {
                        Ok(Ok(value)) => {
                            self.preferred.store(index, Ordering::Relaxed);
                            return Ok(value);
                        }
                        Ok(Err(e)) => self.failure(e),
                        Err(_) => Failure::Retry(format!("no answer within {} ms", limit.as_millis())),
                    }
                }
            };
            match failure {
                Failure::Final(e) => return Err(e),
                Failure::Retry(why) => {
                    tracing::debug!(profile = %self.profile, endpoint = %self.endpoints[index], error = %why, "etcd member failed a request; trying the next");
                    errors[index] = Some(why);
                }
            }
            attempt += 1;
            if attempt % members == 0 {
                // Every member failed: wait a little (a leader election, a restart) and go round again.
                let remaining = self.request_timeout.saturating_sub(started.elapsed());
                tokio::time::sleep(pause.min(remaining)).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }

    /// The error after the request timeout, with each member's last failure.
    fn timed_out(&self, errors: &[Option<String>]) -> BackendError {
        let last: Vec<String> = self
            .endpoints
            .iter()
            .zip(errors)
            .filter_map(|(endpoint, error)| error.as_ref().map(|e| format!("{endpoint}: {e}")))
            .collect();
        self.unavailable(format_args!(
            "no member answered within the request timeout of {} ms (last errors: {})",
            self.request_timeout.as_millis(),
            if last.is_empty() { "none".to_owned() } else { last.join("; ") }
        ))
    }

    /// Whose fault a failed attempt is, and whether another attempt may help.
    fn failure(&self, e: etcd_client::Error) -> Failure {
        let text = describe(&e);
        if let Some(problem) = self.tls_problem(&text) {
            return Failure::Final(self.unavailable(format_args!("{problem} ({text})")));
        }
        if let etcd_client::Error::GRpcStatus(status) = &e {
            let message = status.message();
            let too_large = message.contains("too large") || message.contains("larger than max");
            if too_large {
                return Failure::Final(BackendError::Refused(format!(
                    "etcd refused the request as too large ({message}); etcd's --max-request-bytes is 1.5 MiB unless its admin raised it"
                )));
            }
            if message.contains("requested lease not found") {
                return Failure::Final(BackendError::LeaseGone(format!("etcd: {message}")));
            }
            let credentials = message.contains("authentication") || message.contains("permission denied");
            let code = status.code() as i32;
            if !credentials && matches!(code, GRPC_INVALID_ARGUMENT | GRPC_RESOURCE_EXHAUSTED) {
                return Failure::Final(BackendError::Refused(format!("etcd refused the request: {message}")));
            }
            if credentials || !RETRIED_CODES.contains(&code) {
                return Failure::Final(self.unavailable(text));
            }
            return Failure::Retry(text);
        }
        match e {
            etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
                Failure::Final(self.unavailable(text))
            }
            _ => Failure::Retry(text),
        }
    }

    /// A TLS failure, said in terms of the profile's files: every member
    /// would fail the same way, so it is not retried.
    fn tls_problem(&self, text: &str) -> Option<String> {
        // rustls says what failed in these words; etcd's own messages never use them.
        if !["peer certificate", "alert", "corrupt message"].iter().any(|m| text.contains(m)) {
            return None;
        }
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        let problem = if has(&["UnknownIssuer"]) {
            let ca = self.tls_files.ca.as_deref().unwrap_or("none");
            format!("TLS: the member's certificate is not signed by the CA in ca_file ({ca})")
        } else if has(&["NotValidForName"]) {
            "TLS: the member's certificate is not valid for the endpoint's host name".to_owned()
        } else if has(&["Expired"]) {
            "TLS: a certificate has expired".to_owned()
        } else if has(&["CertificateRequired", "BadCertificate", "UnknownCA"]) {
            // Members built with Go answer a missing client certificate with `bad certificate`.
            match self.tls_files.cert.as_deref() {
                None => "TLS: the member requires a client certificate; set cert_file and key_file".to_owned(),
                Some(cert) => format!(
                    "TLS: the member refused the client certificate in cert_file ({cert}); is it signed by a CA the member trusts?"
                ),
            }
        } else if has(&["InvalidContentType", "CorruptMessage"]) {
            "TLS: the member does not speak TLS; use an http:// endpoint or enable TLS on it".to_owned()
        } else {
            "TLS: the handshake failed".to_owned()
        };
        Some(problem)
    }
}

/// An etcd-client error with the chain of causes under it, which is where
/// transport and TLS errors say what happened.
fn describe(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut source) = match e {
        etcd_client::Error::GRpcStatus(status) => (format!("{:?}: {}", status.code(), status.message()), status.source()),
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// gRPC status codes (etcd-client does not re-export tonic's `Code`).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
/// Codes another member, or the same one a moment later, may answer
/// differently: Cancelled, Unknown (a dropped connection), DeadlineExceeded,
/// Aborted and Unavailable (etcd's "no leader", "leader changed", "request
/// timed out", a member stopping).
const RETRIED_CODES: [i32; 5] = [1, 2, 4, 10, 14];

impl EtcdClient for LiveClient {
    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(self.request(move |mut c, _| {
            let key = key.clone();
            async move {
                let resp = c.get(key, None).await?;
                Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
            }
        }))
    }

    fn range(&self, start: Vec<u8>, end: Vec<u8>, limit: u32) -> BoxFuture<'_, Result<Pairs, BackendError>> {
        Box::pin(self.request(move |c, _| {
            let (start, end) = (start.clone(), end.clone());
            async move {
                let mut kv = c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                let options = GetOptions::new().with_range(end).with_limit(i64::from(limit));
                let resp = kv.get(start, Some(options)).await?;
                Ok(resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect())
            }
        }))
    }

    fn grant_lease(&self, ttl: u32) -> BoxFuture<'_, Result<i64, BackendError>> {
        // A retry after a lost answer grants a second lease; the first holds
        // no key and expires after `ttl`.
        Box::pin(self.request(move |mut c, _| async move { Ok(c.lease_grant(i64::from(ttl), None).await?.id()) }))
    }

    fn put_many(&self, items: Arc<Pairs>, lease: Option<i64>) -> BoxFuture<'_, Result<(), BackendError>> {
        // A retry after a lost answer writes the same values again under the
        // same lease: the same outcome as one write.
        Box::pin(self.request(move |mut c, _| {
            let items = items.clone();
            async move {
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                let ops: Vec<TxnOp> = items.iter().map(|(k, v)| TxnOp::put(k.clone(), v.clone(), options.clone())).collect();
                c.txn(Txn::new().and_then(ops)).await?;
                Ok(())
            }
        }))
    }

    fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) -> BoxFuture<'_, Result<bool, BackendError>> {
        Box::pin(self.request(move |mut c, retry| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), options)])
                    .or_else([TxnOp::get(key, None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(true);
                }
                // A retry finding exactly this value most likely finds the
                // earlier attempt's write, whose answer was lost.
                let holds_ours = resp.op_responses().iter().any(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().is_some_and(|kv| kv.value() == value.as_slice()),
                    _ => false,
                });
                Ok(retry && holds_ours)
            }
        }))
    }

    fn delete(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> BoxFuture<'_, Result<u64, BackendError>> {
        Box::pin(self.request(move |mut c, _| {
            let (key, end) = (key.clone(), end.clone());
            async move {
                let options = end.map(|end| DeleteOptions::new().with_range(end));
                let deleted = c.delete(key, options).await?.deleted();
                Ok(u64::try_from(deleted).unwrap_or(0))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ca: Option<&str>, cert: Option<&str>) -> LiveClient {
        let profile: EtcdProfile = toml::from_str("endpoints = [\"http://127.0.0.1:2379\"]").unwrap();
        let mut client = LiveClient::new("main", &profile).unwrap();
        client.tls_files = TlsFiles { ca: ca.map(str::to_owned), cert: cert.map(str::to_owned) };
        client
    }

    #[test]
    fn tls_failures_name_the_file_to_fix() {
        let c = client(Some("/etc/ca.pem"), Some("/etc/client.pem"));
        let unknown = "Unknown: transport error: invalid peer certificate: UnknownIssuer";
        assert_eq!(c.tls_problem(unknown).unwrap(), "TLS: the member's certificate is not signed by the CA in ca_file (/etc/ca.pem)");
        let refused = "Unknown: transport error: connection error: received fatal alert: BadCertificate";
        assert!(c.tls_problem(refused).unwrap().contains("refused the client certificate in cert_file (/etc/client.pem)"));
        let without_cert = client(Some("/etc/ca.pem"), None);
        assert!(without_cert.tls_problem(refused).unwrap().contains("requires a client certificate; set cert_file and key_file"));
        assert!(c.tls_problem("transport error: received corrupt message of type InvalidContentType").unwrap().contains("does not speak TLS"));
    }

    #[test]
    fn other_failures_are_not_taken_for_tls() {
        let c = client(None, None);
        for text in ["Unavailable: etcdserver: request timed out", "Unavailable: etcdserver: no leader", "lease Expired", "tcp connect error: Connection refused"] {
            assert_eq!(c.tls_problem(text), None, "{text}");
        }
    }
}
