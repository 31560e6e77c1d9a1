//! The `http` capability: requests to the granted paths of one HTTP
//! endpoint, with the endpoint's secrets kept host-side.
//!
//! - `config`: the profile (base URL, secret headers, TLS, timeouts, size
//!   caps) and the grant (methods, path patterns, concurrency, rate);
//! - `path`: the checks of what a guest may ask for, pure and tested;
//! - `client`: one `reqwest` client per profile, its pool, the caps, and
//!   the redaction of secrets from responses;
//! - `host`: the WIT host function, starting with the grant check.
//!
//! The guest names a method and a path, never a host: where a request goes
//! is the profile's. Deny by default: without a grant every call answers
//! `denied`, and every denial is audited once. Nothing else in the host
//! imports `reqwest`.

mod client;
mod config;
mod host;
mod path;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::http;
use super::Profile;
use super::turn::Turn;

pub use client::{ProfileClient, REDACTED, redact_bytes};
pub use config::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT_MS, HttpGrant, HttpMethod, HttpProfile, Source,
};
pub use path::{PathPattern, normalise};

/// HTTP clients by profile name, built once per host and shared by every
/// call of every returner. Cheap to clone.
#[derive(Clone, Default)]
pub struct HttpBackends {
    clients: BTreeMap<String, Arc<ProfileClient>>,
}

impl fmt::Debug for HttpBackends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackends").field("profiles", &self.clients.keys().collect::<Vec<_>>()).finish()
    }
}

impl HttpBackends {
    /// A client for every `http` profile; each connects on first use.
    pub fn from_profiles(profiles: &BTreeMap<String, Profile>) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, profile) in profiles {
            if let Profile::Http(p) = profile {
                let client = ProfileClient::new(name, p).map_err(|e| anyhow::anyhow!("profile `{name}`: {e}"))?;
                clients.insert(name.clone(), Arc::new(client));
            }
        }
        Ok(Self { clients })
    }
}

/// A returner's http grant, resolved once when it is loaded: the parsed
/// path patterns, and the concurrency and rate every call of the returner
/// shares.
#[derive(Debug)]
pub struct HttpGranted {
    grant: HttpGrant,
    patterns: Vec<PathPattern>,
    in_flight: Arc<Semaphore>,
    rate: Option<Mutex<Bucket>>,
}

impl HttpGranted {
    /// Resolve `grant` (validated with the config).
    pub fn new(grant: &HttpGrant) -> Self {
        let patterns = grant.validate().unwrap_or_default();
        let rate = grant.max_requests_per_second.map(|per_second| {
            let burst = per_second.max(1.0);
            Mutex::new(Bucket { per_second, burst, tokens: burst, last: Instant::now() })
        });
        Self { in_flight: Arc::new(Semaphore::new(grant.max_in_flight as usize)), patterns, rate, grant: grant.clone() }
    }

    /// The grant as written.
    pub fn grant(&self) -> &HttpGrant {
        &self.grant
    }

    /// When the next request may start under the rate limit (taking its
    /// turn), or `None` when that is after `deadline` (nothing taken).
    fn next_turn(&self, deadline: Instant) -> Option<Instant> {
        let Some(bucket) = &self.rate else { return Some(Instant::now()) };
        let mut b = bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.per_second).min(b.burst);
        b.last = now;
        let wait = if b.tokens >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - b.tokens) / b.per_second) };
        let at = now + wait;
        if at > deadline {
            return None;
        }
        b.tokens -= 1.0;
        Some(at)
    }
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Per-call http state: the returner's grant and the client of its profile.
#[derive(Clone)]
pub struct HttpCtx {
    returner: Arc<str>,
    granted: Option<Arc<HttpGranted>>,
    client: Option<Arc<ProfileClient>>,
    deadline: Instant,
    /// When its requests may be sent.
    turn: Turn,
}

impl fmt::Debug for HttpCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCtx").field("returner", &self.returner).field("granted", &self.granted.is_some()).finish_non_exhaustive()
    }
}

impl HttpCtx {
    /// State for one call of `returner`, ending at `deadline`.
    pub fn new(returner: Arc<str>, granted: Option<Arc<HttpGranted>>, backends: &HttpBackends, deadline: Instant) -> Self {
        let client = granted.as_ref().and_then(|g| backends.clients.get(&g.grant.profile).cloned());
        Self { returner, granted, client, deadline, turn: Turn::now() }
    }

    /// The same state, its requests waiting for `turn`.
    pub fn in_turn(self, turn: Turn) -> Self {
        Self { turn, ..self }
    }

    /// When the call ends: its deadline, moved on by its wait for its turn.
    fn deadline(&self) -> Instant {
        self.turn.extended(self.deadline)
    }
}

struct HasHttp;
impl HasData for HasHttp {
    type Data<'a> = &'a mut HttpCtx;
}

/// Link `salt:returner/http`.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut HttpCtx) -> wasmtime::Result<()> {
    http::add_to_linker::<T, HasHttp>(linker, get)
}
