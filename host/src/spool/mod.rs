//! The spool: between ingest and the returners, a durable, ordered queue of
//! accepted writes per returner. A write is acknowledged only once it is on
//! disk; delivery (see `delivery`) drains each queue in order, in batches,
//! retrying backend failures and moving what can never succeed to dead
//! letters; a read first waits until every write accepted before it has
//! been delivered.

pub mod admin;
mod delivery;
mod item;
mod reserve;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};

pub use item::{DeadLetter, Item, WRITES, is_write};
use reserve::Reserve;
use store::{Op, Store, StoreError};

use crate::config::SpoolConfig;
use crate::error::{CallError, ErrorKind};

/// The longest a probe call may take (see [`Spool::accept`]); a module that
/// takes longer is taken to implement the function.
const PROBE_DEADLINE: Duration = Duration::from_millis(250);

/// The store's file inside `data_dir/spool`.
pub const SPOOL_FILE: &str = "spool.redb";

/// Items and bytes of one queue, queued and dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Writes waiting for delivery.
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Writes that can never be delivered, kept as dead letters.
    pub dead_items: u64,
    /// Their bytes.
    pub dead_bytes: u64,
}

/// One returner's queue as delivery and the read barrier see it.
pub struct QueueState {
    /// The returner's name.
    pub name: Arc<str>,
    items: AtomicU64,
    bytes: AtomicU64,
    dead_items: AtomicU64,
    dead_bytes: AtomicU64,
    /// The sequence number of the last write committed to this queue.
    accepted: AtomicU64,
    /// Every write up to this sequence number is delivered (or dead).
    delivered: watch::Sender<u64>,
    /// Woken when a write is committed to this queue.
    wake: Notify,
    /// The returner's latest delivery error, while delivery is failing.
    trouble: Mutex<Option<Trouble>>,
    /// When the write at the head of the queue was accepted (ms since the
    /// epoch), 0 when the queue is empty or not yet looked at.
    head_ms: AtomicU64,
}

/// Delivery is failing: since when and why.
#[derive(Clone, Debug)]
struct Trouble {
    since: Instant,
    error: String,
}

impl QueueState {
    fn new(name: &str, counts: Counts, last_seq: u64) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            items: AtomicU64::new(counts.items),
            bytes: AtomicU64::new(counts.bytes),
            dead_items: AtomicU64::new(counts.dead_items),
            dead_bytes: AtomicU64::new(counts.dead_bytes),
            accepted: AtomicU64::new(last_seq),
            delivered: watch::Sender::new(if counts.items == 0 { last_seq } else { 0 }),
            wake: Notify::new(),
            trouble: Mutex::new(None),
            head_ms: AtomicU64::new(0),
        })
    }

    /// Apply a committed transaction's changes; `last_seq` is its newest
    /// write to this queue, if any.
    fn apply(&self, items: i64, bytes: i64, dead_items: i64, dead_bytes: i64, last_seq: Option<u64>) {
        for (counter, delta) in
            [(&self.items, items), (&self.bytes, bytes), (&self.dead_items, dead_items), (&self.dead_bytes, dead_bytes)]
        {
            if delta >= 0 {
                counter.fetch_add(delta as u64, Ordering::AcqRel);
            } else {
                let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(delta.unsigned_abs())));
            }
        }
        if let Some(seq) = last_seq {
            self.accepted.fetch_max(seq, Ordering::AcqRel);
            self.wake.notify_one();
        }
        self.publish_metrics();
    }

    /// Take `counts` and `last_seq` as read from the file, after the store
    /// opened it again, and wake delivery for writes it may not know of.
    fn reset(&self, counts: Counts, last_seq: u64) {
        self.items.store(counts.items, Ordering::Release);
        self.bytes.store(counts.bytes, Ordering::Release);
        self.dead_items.store(counts.dead_items, Ordering::Release);
        self.dead_bytes.store(counts.dead_bytes, Ordering::Release);
        if self.accepted.fetch_max(last_seq, Ordering::AcqRel) < last_seq {
            self.wake.notify_one();
        }
        self.publish_metrics();
    }

    /// Set its gauges to its counts.
    fn publish_metrics(&self) {
        let m = crate::metrics::metrics();
        m.spool_depth(&self.name, self.items.load(Ordering::Acquire), self.bytes.load(Ordering::Acquire));
        m.spool_dead(&self.name, self.dead_items.load(Ordering::Acquire));
    }

    /// Its counts now.
    pub fn counts(&self) -> Counts {
        Counts {
            items: self.items.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
            dead_items: self.dead_items.load(Ordering::Acquire),
            dead_bytes: self.dead_bytes.load(Ordering::Acquire),
        }
    }

    fn mark_delivered(&self, seq: u64) {
        self.delivered.send_if_modified(|d| {
            let moved = seq > *d;
            *d = (*d).max(seq);
            moved
        });
    }

    fn last_error(&self) -> Option<(Duration, String)> {
        let trouble = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        trouble.as_ref().map(|t| (t.since.elapsed(), t.error.clone()))
    }
}

/// One queue's state, as `spool status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStatus {
    /// The returner.
    pub returner: String,
    /// Whether this host's config serves it (a queue left by a returner the
    /// config no longer has is kept, not delivered).
    pub served: bool,
    /// Items and bytes, queued and dead.
    #[serde(flatten)]
    pub counts: Counts,
    /// Age of the oldest write waiting, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// The latest delivery error, while delivery is failing, and for how long.
    pub last_error: Option<String>,
    /// Seconds delivery has been failing.
    pub failing_for_seconds: Option<f64>,
}

/// A dead letter as `spool dead-letters list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterView {
    /// Its sequence number (what `retry` and `drop` take).
    pub seq: u64,
    /// Salt's function.
    pub function: Option<String>,
    /// When the write was accepted, in ms since the epoch.
    pub accepted_ms: Option<u64>,
    /// When it was moved to dead letters, in ms since the epoch.
    pub dead_ms: u64,
    /// The error's kind.
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// Salt's arguments as they arrived (JSON text).
    pub body: String,
}

/// The spool of this host.
pub struct Spool {
    /// Its directory, `data_dir/spool`.
    dir: PathBuf,
    store: Mutex<Option<Store>>,
    queues: BTreeMap<String, Arc<QueueState>>,
    served: Vec<String>,
    config: SpoolConfig,
    accepting: AtomicBool,
    /// By module sha256: the write functions the module does not implement,
    /// with its answer. Such a write is refused at once, as Salt's loader
    /// refuses a function a returner lacks, rather than kept to fail later.
    unsupported: tokio::sync::Mutex<BTreeMap<String, Arc<BTreeMap<&'static str, CallError>>>>,
}

impl Spool {
    /// Open the spool in `dir` (created if need be) for the returners
    /// `served`. A file redb cannot open is moved aside, reported, and a new
    /// spool started, so the host starts.
    pub fn open(dir: &Path, served: &[String], config: SpoolConfig) -> anyhow::Result<Arc<Self>> {
        crate::config::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(SPOOL_FILE);
        let open = || Store::open(&path, served, QueueState::new, config.max_bytes, config.fsync, Reserve::new(dir, config.reserve_bytes));
        let opened = match open() {
            Ok(opened) => opened,
            Err(e) if e.is::<store::Unopenable>() && path.exists() => {
                let aside = dir.join(format!("{SPOOL_FILE}.unreadable-{}", item::now_ms()));
                tracing::error!(
                    spool = %path.display(), moved_to = %aside.display(), error = format!("{e:#}"),
                    "the spool cannot be opened; it is moved aside, kept for inspection, and a new one started: \
                     the writes it held are not delivered"
                );
                std::fs::rename(&path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
                open()?
            }
            Err(e) => return Err(e),
        };
        let (opened, queues) = opened;
        if opened.repaired {
            tracing::warn!(
                spool = %path.display(),
                "the spool was not closed cleanly (a crash, a kill or a power loss) and was repaired to its last commit: \
                 every acknowledged write is in it; a write being committed at that moment was never acknowledged"
            );
        }
        for (name, counts) in &opened.queues {
            if counts.items > 0 || counts.dead_items > 0 {
                let serving = served.contains(name);
                tracing::info!(
                    returner = %name, items = counts.items, bytes = counts.bytes, dead_letters = counts.dead_items,
                    delivered = serving,
                    "the spool holds writes from before this start{}",
                    if serving { "; delivering them" } else { ", for a returner this config does not serve; kept" }
                );
            }
        }
        for q in queues.values() {
            q.publish_metrics();
        }
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            store: Mutex::new(Some(opened.store)),
            queues,
            served: served.to_vec(),
            config,
            accepting: AtomicBool::new(true),
            unsupported: Default::default(),
        }))
    }

    /// Its settings.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    fn send(&self, op: Op) {
        if let Some(store) = self.store.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            store.send(op);
        }
    }

    /// The write functions `returner`'s module does not implement, found
    /// once per module by calling each in an empty sandbox (no grants, no
    /// options: nothing it does there can have an effect), as `inspect` does.
    async fn unsupported(&self, runtime: &crate::runtime::Runtime, returner: &crate::runtime::Returner) -> Arc<BTreeMap<&'static str, CallError>> {
        let sha = &returner.module().info().sha256;
        let mut known = self.unsupported.lock().await;
        if let Some(found) = known.get(sha) {
            return found.clone();
        }
        let sandbox = returner.probe(PROBE_DEADLINE);
        let probes = WRITES.iter().map(|function| {
            let sandbox = &sandbox;
            async move {
                let args = crate::testkit::probe_args(function).to_string();
                let call = crate::dispatch::parse_call(function, args.as_bytes()).ok()?;
                match sandbox.call(runtime, &call).await {
                    Err(e) if e.kind == ErrorKind::Unsupported => Some((*function, e)),
                    _ => None,
                }
            }
        });
        let found: BTreeMap<&'static str, CallError> = futures::future::join_all(probes).await.into_iter().flatten().collect();
        let found = Arc::new(found);
        known.insert(sha.clone(), found.clone());
        found
    }

    /// Take a write of Salt's `function` (already checked to parse) for
    /// `targets`, the returner of Salt's name or its `fan_out` returners,
    /// answering once it is on disk in each target's queue (one commit). A
    /// target whose module does not implement the write is left out; when
    /// none does, the write is refused at once.
    pub async fn accept(
        &self,
        runtime: &crate::runtime::Runtime,
        targets: &[Arc<crate::runtime::Returner>],
        function: &str,
        body: &[u8],
    ) -> Result<(), CallError> {
        let mut queues = Vec::with_capacity(targets.len());
        let mut refusal = None;
        for target in targets {
            match self.unsupported(runtime, target).await.get(function) {
                Some(e) => {
                    refusal.get_or_insert_with(|| e.clone());
                }
                None => queues.push(self.queue(target.name())?.clone()),
            }
        }
        if queues.is_empty() {
            return Err(refusal.unwrap_or_else(|| CallError::new(ErrorKind::NotFound, "a write for no returner")));
        }
        if !self.accepting.load(Ordering::Acquire) {
            return Err(CallError::new(ErrorKind::Unavailable, "the host is shutting down and takes no more writes; retry against it once it is back"));
        }
        let item = Item::new(function, body)
            .ok_or_else(|| CallError::new(ErrorKind::NotFound, format!("no returner function `{function}`")))?
            .encode();
        let (reply, answer) = oneshot::channel();
        self.send(Op::Append { queues, item, reply });
        match answer.await {
            Ok(Ok(_seq)) => Ok(()),
            Ok(Err(StoreError::Full { held, max })) => Err(CallError::new(
                ErrorKind::SpoolFull,
                format!(
                    "the spool holds {held} bytes and this write would put it over server.spool.max_bytes = {max}; \
                     nothing accepted before is touched; retry once delivery has drained it (see `returner-host spool status`)"
                ),
            )),
            Ok(Err(StoreError::DiskFull(e))) => Err(CallError::new(
                ErrorKind::SpoolFull,
                format!(
                    "the spool's disk is full: {} has no room for this write ({e}); nothing accepted before is touched; \
                     retry once there is room (space freed on that filesystem, or the spool drained by delivery: \
                     see `returner-host spool status`)",
                    self.dir.display()
                ),
            )),
            Ok(Err(StoreError::Io(e))) => Err(CallError::new(
                ErrorKind::SpoolFull,
                format!("the spool in {} could not store this write ({e}); nothing accepted before is touched; retry later", self.dir.display()),
            )),
            Err(_) => Err(CallError::new(ErrorKind::Unavailable, "the spool is closed; the host is shutting down")),
        }
    }

    /// Wait until every write accepted for returner `name` before now has
    /// been delivered, or answer `pending` at `deadline`.
    pub async fn barrier(&self, name: &str, deadline: Instant) -> Result<(), CallError> {
        let Some(q) = self.queues.get(name) else { return Ok(()) };
        let target = q.accepted.load(Ordering::Acquire);
        let mut delivered = q.delivered.subscribe();
        let wait = async {
            loop {
                if *delivered.borrow_and_update() >= target {
                    return;
                }
                if delivered.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout_at(deadline.into(), wait).await.is_ok() {
            return Ok(());
        }
        let counts = q.counts();
        let why = match q.last_error() {
            Some((for_how_long, error)) => {
                format!("; delivery has been failing for {} s: {error}", for_how_long.as_secs())
            }
            None => String::new(),
        };
        Err(CallError::new(
            ErrorKind::Pending,
            format!(
                "returner `{}` still has {} earlier writes ({} bytes) to deliver before this read can see them{why}",
                q.name, counts.items, counts.bytes
            ),
        ))
    }

    /// Every queue's state.
    pub async fn status(&self) -> Vec<QueueStatus> {
        let mut out = Vec::new();
        for (name, q) in &self.queues {
            let counts = q.counts();
            let mut head_ms = q.head_ms.load(Ordering::Acquire);
            if counts.items > 0 && head_ms == 0 {
                let (reply, answer) = oneshot::channel();
                self.send(Op::Head { queue: q.clone(), reply });
                if let Ok(Some((_, bytes))) = answer.await {
                    head_ms = Item::decode(&bytes).map_or(0, |i| i.accepted_ms);
                }
            }
            let oldest = (counts.items > 0 && head_ms > 0)
                .then(|| item::now_ms().saturating_sub(head_ms) as f64 / 1000.0);
            let trouble = q.last_error();
            out.push(QueueStatus {
                returner: name.clone(),
                served: self.served.contains(name),
                counts,
                oldest_age_seconds: oldest,
                failing_for_seconds: trouble.as_ref().map(|(d, _)| d.as_secs_f64()),
                last_error: trouble.map(|(_, e)| e),
            });
        }
        out
    }

    fn queue(&self, name: &str) -> Result<&Arc<QueueState>, CallError> {
        self.queues.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.queues.keys().map(String::as_str).collect();
            CallError::new(ErrorKind::NotFound, format!("the spool has no queue `{name}`; it has: {}", known.join(", ")))
        })
    }

    /// The dead letters of `name`.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetterView>, CallError> {
        let q = self.queue(name)?.clone();
        let (reply, answer) = oneshot::channel();
        self.send(Op::ListDead { queue: q, reply });
        let letters = answer.await.map_err(|_| closed())?.map_err(store_error)?;
        Ok(letters
            .into_iter()
            .map(|(seq, letter)| {
                let item = Item::decode(&letter.item);
                DeadLetterView {
                    seq,
                    function: item.as_ref().map(|i| i.function.to_owned()),
                    accepted_ms: item.as_ref().map(|i| i.accepted_ms),
                    dead_ms: letter.dead_ms,
                    kind: letter.kind,
                    message: letter.message,
                    body: item.map_or_else(
                        || String::from_utf8_lossy(&letter.item).into_owned(),
                        |i| String::from_utf8_lossy(&i.body).into_owned(),
                    ),
                }
            })
            .collect())
    }

    /// Put dead letters of `name` (all, or those in `seqs`) back at the end
    /// of its queue; answers how many.
    pub async fn retry_dead(&self, name: &str, seqs: Option<Vec<u64>>) -> Result<usize, CallError> {
        let q = self.queue(name)?.clone();
        let (reply, answer) = oneshot::channel();
        self.send(Op::RetryDead { queue: q, seqs, reply });
        answer.await.map_err(|_| closed())?.map_err(store_error)
    }

    /// Delete dead letters of `name` (all, or those in `seqs`); answers how many.
    pub async fn drop_dead(&self, name: &str, seqs: Option<Vec<u64>>) -> Result<usize, CallError> {
        let q = self.queue(name)?.clone();
        let (reply, answer) = oneshot::channel();
        self.send(Op::DropDead { queue: q, seqs, reply });
        answer.await.map_err(|_| closed())?.map_err(store_error)
    }

    /// Start delivering every served queue through `host`.
    pub fn start_delivery(self: &Arc<Self>, host: Arc<crate::dispatch::ReturnerHost>) -> delivery::Delivery {
        let queues = self.served.iter().filter_map(|n| self.queues.get(n).cloned()).collect();
        delivery::Delivery::start(self.clone(), host, queues)
    }

    /// Take no more writes.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Whether every served queue is delivered up to its last accepted write.
    pub fn drained(&self) -> bool {
        self.served.iter().filter_map(|n| self.queues.get(n)).all(|q| *q.delivered.borrow() >= q.accepted.load(Ordering::Acquire))
    }

    /// Finish the store's work and close it.
    pub fn close(&self) {
        if let Some(store) = self.store.lock().unwrap_or_else(|p| p.into_inner()).take() {
            store.close();
        }
    }
}

fn closed() -> CallError {
    CallError::new(ErrorKind::Unavailable, "the spool is closed; the host is shutting down")
}

fn store_error(e: StoreError) -> CallError {
    match e {
        StoreError::Full { held, max } => {
            CallError::new(ErrorKind::SpoolFull, format!("the spool holds {held} bytes, at server.spool.max_bytes = {max}"))
        }
        StoreError::DiskFull(e) => CallError::new(ErrorKind::SpoolFull, format!("the spool's disk is full: {e}")),
        StoreError::Io(e) => CallError::new(ErrorKind::Internal, format!("the spool failed: {e}")),
    }
}

pub use delivery::Delivery;
