//! The spool's store: one redb file, `data_dir/spool/spool.redb`, owned by
//! one thread that commits whatever writes have queued up in one transaction
//! (group commit: concurrent writes share one fsync) and answers each only
//! after the commit.
//!
//! Tables: `queue:<returner>` (sequence number → item), `dead:<returner>`
//! (sequence number → dead letter) and `counts` (returner → items and bytes
//! queued and dead), kept in the same transactions as the tables they count,
//! so they cannot drift and a start need not walk a large backlog.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition, TableHandle as _};
use tokio::sync::oneshot;

use super::item::DeadLetter;
use super::reserve::Reserve;
use super::{Counts, QueueState};

/// Writes collected into one transaction at most.
const MAX_OPS_PER_COMMIT: usize = 4096;
/// Bytes of items collected into one transaction at most.
const MAX_BYTES_PER_COMMIT: usize = 64 * 1024 * 1024;
/// With `fsync = false`, a durable commit this often anyway: redb frees the
/// pages of removed items only at a durable commit.
const LAZY_SYNC_EVERY: Duration = Duration::from_secs(1);

const COUNTS: TableDefinition<&str, [u64; 4]> = TableDefinition::new("counts");
/// `commits`: how many transactions have been committed, kept in each, so
/// that after a commit that failed the store can tell, from the file it
/// opens again, whether that commit reached the disk all the same.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMMITS: &str = "commits";
/// `next_seq`: the next sequence number to hand out, so that none is used
/// twice even once every item that had one is gone.
const NEXT_SEQ: &str = "next_seq";

fn queue_table(name: &str) -> String {
    format!("queue:{name}")
}

fn dead_table(name: &str) -> String {
    format!("dead:{name}")
}

/// Why the store could not take a write.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// Taking it would put the spool over `server.spool.max_bytes`.
    Full { held: u64, max: u64 },
    /// The filesystem under the spool has no room (`ENOSPC`, `EDQUOT`);
    /// nothing of this write was kept. Only room on the disk cures it.
    DiskFull(String),
    /// The disk or the store failed otherwise; nothing of this write was kept.
    Io(String),
}

/// redb could not open the file at all (as opposed to a failure after),
/// and not for want of room on the disk: the file itself is unreadable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unopenable(pub String);

/// A request to the store's thread.
pub enum Op {
    /// Add `item` to the end of every queue in `queues`, in one commit.
    Append { queues: Vec<Arc<QueueState>>, item: Vec<u8>, reply: oneshot::Sender<Result<u64, StoreError>> },
    /// Remove delivered items (sequence numbers, and their bytes).
    Delivered { queue: Arc<QueueState>, items: Vec<(u64, u64)> },
    /// Move one item to the queue's dead letters with the error it met.
    Bury { queue: Arc<QueueState>, seq: u64, error_kind: String, error: String, reply: oneshot::Sender<Result<(), StoreError>> },
    /// Up to `max_items` items (and about `max_bytes`) after `after`.
    Read {
        queue: Arc<QueueState>,
        after: u64,
        max_items: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<(u64, Vec<u8>)>, StoreError>>,
    },
    /// The sequence number and item at the head of a queue, if any.
    Head { queue: Arc<QueueState>, reply: oneshot::Sender<Option<(u64, Vec<u8>)>> },
    /// The dead letters of a queue.
    ListDead { queue: Arc<QueueState>, reply: oneshot::Sender<Result<Vec<(u64, DeadLetter)>, StoreError>> },
    /// Put dead letters (all, or these) back at the end of their queue.
    RetryDead { queue: Arc<QueueState>, seqs: Option<Vec<u64>>, reply: oneshot::Sender<Result<usize, StoreError>> },
    /// Delete dead letters (all, or these).
    DropDead { queue: Arc<QueueState>, seqs: Option<Vec<u64>>, reply: oneshot::Sender<Result<usize, StoreError>> },
}

/// The handle to the store's thread.
pub struct Store {
    tx: Sender<Op>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What opening found.
pub struct Opened {
    pub store: Store,
    /// Queues found in the file, with their counts: returners of the config
    /// and any the config no longer has.
    pub queues: BTreeMap<String, Counts>,
    /// Whether redb had to repair the file (the last run did not close it).
    pub repaired: bool,
}

impl Store {
    /// Open (or create) the store at `path`, creating `names`' queues, and
    /// start its thread. `max_bytes` bounds queued plus dead bytes; `fsync`
    /// makes every commit durable before it is answered; `reserve` is the
    /// disk reserve beside the file.
    pub fn open(
        path: &Path,
        names: &[String],
        states: impl Fn(&str, Counts, u64) -> Arc<QueueState>,
        max_bytes: u64,
        fsync: bool,
        mut reserve: Reserve,
    ) -> anyhow::Result<(Opened, BTreeMap<String, Arc<QueueState>>)> {
        let (db, repaired) = match open_db(path) {
            // Repairing the file after a crash may need room the disk lacks.
            Err(e) if is_disk_full(&e) && reserve.release() => open_db(path),
            opened => opened,
        }
        .map_err(|e| open_error(path, e))?;
        create_tables(&db, names)?;
        let found = scan(&db)?;
        let mut by_name = BTreeMap::new();
        for (name, counts) in &found.queues {
            by_name.insert(name.clone(), states(name, *counts, found.last_seq.get(name).copied().unwrap_or(0)));
        }
        let queues = found.queues.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut writer = Writer {
            path: path.to_path_buf(),
            db: Some(db),
            states: by_name.clone(),
            next_seq: 0,
            commits: 0,
            held: 0,
            max_bytes,
            fsync,
            last_sync: std::time::Instant::now(),
            removals: Vec::new(),
            disk_full_at: None,
            removals_tried: std::time::Instant::now(),
            failing_since: None,
            reserve,
            reserve_tried: std::time::Instant::now(),
        };
        writer.take(&found);
        let thread = std::thread::Builder::new()
            .name("spool-store".into())
            .spawn(move || writer.run(rx))?;
        let store = Store { tx, thread: Some(thread) };
        Ok((Opened { store, queues, repaired }, by_name))
    }

    /// Send `op` to the store's thread. After [`Store::close`] the op is
    /// dropped, and so is its reply channel: the waiter sees that.
    pub fn send(&self, op: Op) {
        let _ = self.tx.send(op);
    }

    /// Stop the thread once it has done every op sent before (as dropping
    /// the handle does).
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The store's page cache. Appends go to the tail of each queue and
/// delivery reads its head, so a small cache holds what is read back; with
/// redb's default (1 GiB) the host's memory grew with the backlog.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

fn open_db(path: &Path) -> Result<(Database, bool), redb::DatabaseError> {
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .create(path)?;
    Ok((db, repaired.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Why `path` did not open: [`Unopenable`] unless the disk is full, which
/// may keep redb from repairing a file it can read, and is no reason to set
/// the file, and the writes it holds, aside.
fn open_error(path: &Path, e: redb::DatabaseError) -> anyhow::Error {
    let full = is_disk_full(&e);
    let e = format!("opening the spool {}: {e}", path.display());
    if full { anyhow::anyhow!("{e}: the disk is full; start again once it has room") } else { anyhow::Error::new(Unopenable(e)) }
}

/// Whether opening failed for want of room on the disk.
fn is_disk_full(e: &redb::DatabaseError) -> bool {
    matches!(e, redb::DatabaseError::Storage(redb::StorageError::Io(e)) if disk_full(e))
}

/// What the file holds: every queue's counts and last sequence number, the
/// next sequence number to hand out and how many commits it has seen.
struct Scanned {
    queues: BTreeMap<String, Counts>,
    last_seq: BTreeMap<String, u64>,
    next_seq: u64,
    commits: u64,
}

/// Create `names`' queues (and their counts) where the file lacks them.
fn create_tables(db: &Database, names: &[String]) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        let mut counts = txn.open_table(COUNTS)?;
        for name in names {
            if counts.get(name.as_str())?.is_none() {
                counts.insert(name.as_str(), [0u64; 4])?;
            }
            txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))?;
            txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))?;
        }
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(())
}

/// Read what the file holds (see [`Scanned`]).
fn scan(db: &Database) -> Result<Scanned, redb::Error> {
    let read = db.begin_read()?;
    let mut queues = BTreeMap::new();
    let mut last = BTreeMap::new();
    let mut next = 1u64;
    let counts = read.open_table(COUNTS)?;
    for entry in counts.iter()? {
        let (name, c) = entry?;
        let [items, bytes, dead_items, dead_bytes] = c.value();
        queues.insert(name.value().to_owned(), Counts { items, bytes, dead_items, dead_bytes });
    }
    // A queue's own last item, for the read barrier.
    for name in queues.keys() {
        let q = read.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))?;
        last.insert(name.clone(), q.last()?.map_or(0, |(k, _)| k.value()));
    }
    // A sequence number is never reused: past the last key of every queue
    // and dead-letter table, of served returners and of any others.
    for table in read.list_tables()? {
        if !table.name().starts_with("queue:") && !table.name().starts_with("dead:") {
            continue;
        }
        let t = read.open_table(TableDefinition::<u64, &[u8]>::new(table.name()))?;
        if let Some((k, _)) = t.last()? {
            next = next.max(k.value() + 1);
        }
    }
    let mut commits = 0;
    match read.open_table(META) {
        Ok(meta) => {
            commits = meta.get(COMMITS)?.map_or(0, |v| v.value());
            next = next.max(meta.get(NEXT_SEQ)?.map_or(0, |v| v.value()));
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Scanned { queues, last_seq: last, next_seq: next, commits })
}

struct Writer {
    path: PathBuf,
    db: Option<Database>,
    /// The queues served, whose counts the writer keeps.
    states: BTreeMap<String, Arc<QueueState>>,
    next_seq: u64,
    /// Transactions committed to the file (its `meta` table's `commits`).
    commits: u64,
    /// Bytes queued plus dead, over every queue.
    held: u64,
    max_bytes: u64,
    fsync: bool,
    last_sync: std::time::Instant,
    /// Delivered items whose removal a failed commit did not make. Delivery
    /// does not wait for removals, so the store retries them itself, first,
    /// until one commits: without that a spool whose disk filled would keep
    /// them (and count them) for good.
    removals: Vec<Removal>,
    /// When the disk under the spool was last found full. redb reuses the
    /// pages of removed items only after a later durable commit, so until a
    /// while after that, a commit that removes items is followed by an empty
    /// one: the room delivery made is then there for the next write.
    disk_full_at: Option<std::time::Instant>,
    /// When removals were last tried alone.
    removals_tried: std::time::Instant,
    /// Since when commits have been failing (the file is opened again after
    /// each failure; that is said once, not at every attempt).
    failing_since: Option<std::time::Instant>,
    /// The disk reserve, given up when removals find no room.
    reserve: Reserve,
    /// When taking the reserve back was last tried.
    reserve_tried: std::time::Instant,
}

/// How often removals that could not be committed are tried again alone.
const REMOVALS_RETRY: Duration = Duration::from_secs(1);

/// How long after a full disk removals are followed by an empty commit.
const RECLAIM_FOR: Duration = Duration::from_secs(60);

/// Delivered items of one queue to remove: sequence numbers and sizes.
type Removal = (Arc<QueueState>, Vec<(u64, u64)>);

fn removal((queue, items): Removal) -> Op {
    Op::Delivered { queue, items }
}

/// The effect of a committed transaction on one queue's counts.
#[derive(Default)]
struct Delta {
    items: i64,
    bytes: i64,
    dead_items: i64,
    dead_bytes: i64,
    last_seq: Option<u64>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Op>) {
        loop {
            let first = match rx.recv_timeout(LAZY_SYNC_EVERY) {
                Ok(op) => op,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    if !self.fsync && self.last_sync.elapsed() >= LAZY_SYNC_EVERY {
                        self.sync_now();
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut ops = vec![first];
            let mut bytes = 0usize;
            while ops.len() < MAX_OPS_PER_COMMIT && bytes < MAX_BYTES_PER_COMMIT {
                match rx.try_recv() {
                    Ok(op) => {
                        if let Op::Append { item, .. } = &op {
                            bytes += item.len();
                        }
                        ops.push(op);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.handle(ops);
        }
        self.sync_now();
    }

    /// Writes in one transaction, then reads (which see the commit).
    fn handle(&mut self, ops: Vec<Op>) {
        let (writes, reads): (Vec<Op>, Vec<Op>) =
            ops.into_iter().partition(|op| !matches!(op, Op::Read { .. } | Op::Head { .. } | Op::ListDead { .. }));
        if !writes.is_empty() {
            self.commit(writes);
        }
        self.housekeeping();
        for op in reads {
            self.read(op);
        }
    }

    /// At most every [`REMOVALS_RETRY`] (on a full disk each attempt fails,
    /// and the store must not spin on them): try removals that could not be
    /// committed again, alone, and take the disk reserve back if it was
    /// given up.
    fn housekeeping(&mut self) {
        if !self.removals.is_empty() && self.removals_tried.elapsed() >= REMOVALS_RETRY {
            self.removals_tried = std::time::Instant::now();
            self.commit(Vec::new());
        }
        if self.reserve_tried.elapsed() >= REMOVALS_RETRY {
            self.reserve_tried = std::time::Instant::now();
            self.reserve.restore();
        }
    }

    /// The database, opened again if an I/O error closed it. What the file
    /// holds then is the truth: a commit that failed may have reached the
    /// disk all the same, so counts, sequence numbers and the bytes held are
    /// read from it again, and delivery is woken for what it may not know.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            let (db, _) = open_db(&self.path).map_err(io)?;
            let found = scan(&db).map_err(io)?;
            self.take(&found);
            self.db = Some(db);
        }
        Ok(self.db.as_ref().expect("just opened"))
    }

    /// Take what a scan of the file found as the writer's and the queues' state.
    fn take(&mut self, found: &Scanned) {
        // Delivery has seen sequence numbers up to the last handed out.
        self.next_seq = self.next_seq.max(found.next_seq);
        self.commits = found.commits;
        self.held = found.queues.values().map(|c| c.bytes + c.dead_bytes).sum();
        for (name, state) in &self.states {
            let counts = found.queues.get(name).copied().unwrap_or_default();
            state.reset(counts, found.last_seq.get(name).copied().unwrap_or(0));
        }
    }

    /// Commit `writes` after the removals earlier commits left. When the
    /// transaction fails (an append the disk has no room for, most likely),
    /// its removals, which only free space, are tried again alone, and kept
    /// for the next commit if that fails too.
    fn commit(&mut self, mut writes: Vec<Op>) {
        writes.splice(0..0, std::mem::take(&mut self.removals).into_iter().map(removal));
        self.removals_tried = std::time::Instant::now();
        let removals: Vec<Removal> = writes
            .iter()
            .filter_map(|op| match op {
                Op::Delivered { queue, items } => Some((queue.clone(), items.clone())),
                _ => None,
            })
            .collect();
        let others = writes.len() > removals.len();
        if writes.is_empty() {
            return;
        }
        let mut outcome = self.commit_once(writes);
        if outcome.is_err() && !removals.is_empty() {
            let alone = |removals: &[Removal]| removals.iter().cloned().map(removal).collect();
            if others {
                outcome = self.commit_once(alone(&removals));
            }
            // Even a removal needs new pages: the reserve gives them room.
            if matches!(outcome, Err(StoreError::DiskFull(_))) && self.reserve.release() {
                outcome = self.commit_once(alone(&removals));
            }
            if outcome.is_err() {
                self.removals = removals;
                return;
            }
        }
        if outcome.is_ok() && !removals.is_empty() && self.disk_full_at.is_some_and(|t| t.elapsed() < RECLAIM_FOR) {
            self.sync_now();
        }
    }

    fn commit_once(&mut self, writes: Vec<Op>) -> Result<(), StoreError> {
        let mut replies: Vec<Box<dyn FnOnce(Result<(), StoreError>)>> = Vec::new();
        let mut deltas: BTreeMap<String, (Arc<QueueState>, Delta)> = BTreeMap::new();
        let outcome = self.apply(writes, &mut replies, &mut deltas);
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(e @ (StoreError::Io(_) | StoreError::DiskFull(_))) => {
                // An I/O error leaves redb refusing every later operation
                // until the file is opened again. Whether the transaction
                // reached the disk is for the file to say: opening it again
                // takes its state (and so this transaction's effects, if it
                // landed); if it cannot be opened yet, that happens at the
                // next attempt, and a write answered with an error may then
                // be delivered after all (at least once; never lost).
                let attempted = self.commits + 1;
                self.db = None;
                deltas.clear();
                if self.db().is_ok() && self.commits == attempted {
                    Ok(())
                } else {
                    if matches!(e, StoreError::DiskFull(_)) {
                        // Make the room earlier removals left usable now.
                        self.disk_full_at = Some(std::time::Instant::now());
                        self.sync_now();
                    }
                    Err(e)
                }
            }
            Err(e) => Err(e),
        };
        self.note(&outcome);
        if outcome.is_ok() {
            for (_, (state, d)) in deltas {
                self.held = (self.held as i64 + d.bytes + d.dead_bytes).max(0) as u64;
                state.apply(d.items, d.bytes, d.dead_items, d.dead_bytes, d.last_seq);
            }
        }
        for reply in replies {
            reply(outcome.clone());
        }
        outcome
    }

    fn apply(
        &mut self,
        writes: Vec<Op>,
        replies: &mut Vec<Box<dyn FnOnce(Result<(), StoreError>)>>,
        deltas: &mut BTreeMap<String, (Arc<QueueState>, Delta)>,
    ) -> Result<(), StoreError> {
        let durable = self.fsync || self.last_sync.elapsed() >= LAZY_SYNC_EVERY;
        self.db()?;
        let (max_bytes, mut held, mut next_seq, commits) = (self.max_bytes, self.held, self.next_seq, self.commits);
        let db = self.db.as_ref().expect("opened above");
        let mut txn = db.begin_write().map_err(io)?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io)?;
        for op in writes {
            match op {
                Op::Append { queues, item, reply } => {
                    let size = item.len() as u64 * queues.len() as u64;
                    if held + size > max_bytes {
                        let _ = reply.send(Err(StoreError::Full { held, max: max_bytes }));
                        continue;
                    }
                    held += size;
                    let seq = next_seq;
                    next_seq += 1;
                    for q in &queues {
                        queue(&txn, &q.name)?.insert(seq, item.as_slice()).map_err(io)?;
                        let d = delta(deltas, q);
                        d.items += 1;
                        d.bytes += item.len() as i64;
                        d.last_seq = Some(seq);
                    }
                    replies.push(Box::new(move |r| {
                        let _ = reply.send(r.map(|()| seq));
                    }));
                }
                Op::Delivered { queue: q, items } => {
                    let mut t = queue(&txn, &q.name)?;
                    for (seq, _) in items {
                        if let Some(gone) = t.remove(seq).map_err(io)? {
                            let d = delta(deltas, &q);
                            d.items -= 1;
                            d.bytes -= gone.value().len() as i64;
                        }
                    }
                }
                Op::Bury { queue: q, seq, error_kind, error, reply } => {
                    let item = queue(&txn, &q.name)?.remove(seq).map_err(io)?.map(|v| v.value().to_vec());
                    if let Some(item) = item {
                        let letter = DeadLetter::new(&error_kind, &error, item.clone()).encode();
                        dead(&txn, &q.name)?.insert(seq, letter.as_slice()).map_err(io)?;
                        let d = delta(deltas, &q);
                        d.items -= 1;
                        d.bytes -= item.len() as i64;
                        d.dead_items += 1;
                        d.dead_bytes += letter.len() as i64;
                    }
                    replies.push(Box::new(move |r| {
                        let _ = reply.send(r);
                    }));
                }
                Op::RetryDead { queue: q, seqs, reply } => {
                    let letters = take_dead(&txn, &q.name, seqs.as_deref())?;
                    let n = letters.len();
                    for (_, letter, size) in letters {
                        let seq = next_seq;
                        next_seq += 1;
                        queue(&txn, &q.name)?.insert(seq, letter.item.as_slice()).map_err(io)?;
                        let d = delta(deltas, &q);
                        d.dead_items -= 1;
                        d.dead_bytes -= size as i64;
                        d.items += 1;
                        d.bytes += letter.item.len() as i64;
                        d.last_seq = Some(seq);
                    }
                    replies.push(Box::new(move |r| {
                        let _ = reply.send(r.map(|()| n));
                    }));
                }
                Op::DropDead { queue: q, seqs, reply } => {
                    let letters = take_dead(&txn, &q.name, seqs.as_deref())?;
                    let n = letters.len();
                    for (_, _, size) in letters {
                        let d = delta(deltas, &q);
                        d.dead_items -= 1;
                        d.dead_bytes -= size as i64;
                    }
                    replies.push(Box::new(move |r| {
                        let _ = reply.send(r.map(|()| n));
                    }));
                }
                Op::Read { .. } | Op::Head { .. } | Op::ListDead { .. } => unreachable!("reads are served after the commit"),
            }
        }
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            meta.insert(COMMITS, commits + 1).map_err(io)?;
            meta.insert(NEXT_SEQ, next_seq).map_err(io)?;
        }
        {
            let mut counts = txn.open_table(COUNTS).map_err(io)?;
            for (name, (_, d)) in deltas.iter() {
                let [items, bytes, dead_items, dead_bytes] =
                    counts.get(name.as_str()).map_err(io)?.map_or([0; 4], |v| v.value());
                let add = |a: u64, b: i64| (a as i64 + b).max(0) as u64;
                let row = [add(items, d.items), add(bytes, d.bytes), add(dead_items, d.dead_items), add(dead_bytes, d.dead_bytes)];
                counts.insert(name.as_str(), row).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        if durable {
            self.last_sync = std::time::Instant::now();
        }
        self.commits += 1;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Say once when commits start failing, and when they work again.
    fn note(&mut self, outcome: &Result<(), StoreError>) {
        match (outcome, self.failing_since) {
            (Err(e), None) => {
                self.failing_since = Some(std::time::Instant::now());
                tracing::warn!(
                    spool = %self.path.display(), error = ?e,
                    "the spool cannot commit; writes are refused until it can (the file is opened again at each attempt)"
                );
            }
            (Ok(()), Some(since)) => {
                self.failing_since = None;
                tracing::info!(spool = %self.path.display(), failed_for_s = since.elapsed().as_secs_f64(), "the spool commits again");
            }
            _ => {}
        }
    }

    /// A durable commit of nothing: makes earlier non-durable commits durable.
    fn sync_now(&mut self) {
        let Ok(db) = self.db() else { return };
        let committed: Result<(), redb::Error> = db.begin_write().map_err(Into::into).and_then(|txn| txn.commit().map_err(Into::into));
        match committed {
            Ok(()) => self.last_sync = std::time::Instant::now(),
            // redb takes nothing more until the file is opened again.
            Err(_) => self.db = None,
        }
    }

    fn read(&mut self, op: Op) {
        match op {
            Op::Read { queue: q, after, max_items, max_bytes, reply } => {
                let _ = reply.send(self.read_items(&q.name, after, max_items, max_bytes));
            }
            Op::Head { queue: q, reply } => {
                let _ = reply.send(self.read_items(&q.name, 0, 1, 0).ok().and_then(|mut v| v.pop()));
            }
            Op::ListDead { queue: q, reply } => {
                let _ = reply.send(self.list_dead(&q.name));
            }
            _ => unreachable!("writes are committed"),
        }
    }

    fn read_items(&mut self, name: &str, after: u64, max_items: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(io)?;
        let t = txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name))).map_err(io)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in t.range(after.saturating_add(1)..).map_err(io)? {
            let (k, v) = entry.map_err(io)?;
            // Always at least one item, however large.
            if !out.is_empty() && (out.len() >= max_items || bytes + v.value().len() > max_bytes) {
                break;
            }
            bytes += v.value().len();
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn list_dead(&mut self, name: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(io)?;
        let t = txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name))).map_err(io)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(io)? {
            let (k, v) = entry.map_err(io)?;
            out.push((k.value(), DeadLetter::decode_or_raw(v.value())));
        }
        Ok(out)
    }
}

/// A failure of redb or of the disk under it, with a full disk told apart.
fn io(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) if disk_full(&e) => StoreError::DiskFull(e.to_string()),
        e => StoreError::Io(e.to_string()),
    }
}

/// Whether the disk has no room: `ENOSPC` or `EDQUOT`.
fn disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

fn delta<'a>(deltas: &'a mut BTreeMap<String, (Arc<QueueState>, Delta)>, q: &Arc<QueueState>) -> &'a mut Delta {
    &mut deltas.entry(q.name.to_string()).or_insert_with(|| (q.clone(), Delta::default())).1
}

fn queue<'t>(txn: &'t redb::WriteTransaction, name: &str) -> Result<redb::Table<'t, u64, &'static [u8]>, StoreError> {
    txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name))).map_err(io)
}

fn dead<'t>(txn: &'t redb::WriteTransaction, name: &str) -> Result<redb::Table<'t, u64, &'static [u8]>, StoreError> {
    txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name))).map_err(io)
}

/// Remove dead letters (all, or those in `seqs`) and hand them back with
/// their stored size.
fn take_dead(txn: &redb::WriteTransaction, name: &str, seqs: Option<&[u64]>) -> Result<Vec<(u64, DeadLetter, usize)>, StoreError> {
    let mut t = dead(txn, name)?;
    let keys: Vec<u64> = match seqs {
        Some(seqs) => seqs.to_vec(),
        None => t.iter().map_err(io)?.map(|e| e.map(|(k, _)| k.value())).collect::<Result<_, _>>().map_err(io)?,
    };
    let mut out = Vec::new();
    for k in keys {
        if let Some(v) = t.remove(k).map_err(io)? {
            let size = v.value().len();
            out.push((k, DeadLetter::decode_or_raw(v.value()), size));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_and_sets_no_file_aside() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(matches!(io(redb::StorageError::Io(enospc())), StoreError::DiskFull(_)));
        assert!(matches!(io(redb::StorageError::Io(std::io::Error::from_raw_os_error(5))), StoreError::Io(_)));
        let path = Path::new("/var/lib/returner-host/spool/spool.redb");
        let full = open_error(path, redb::DatabaseError::Storage(redb::StorageError::Io(enospc())));
        assert!(!full.is::<Unopenable>() && full.to_string().contains("the disk is full"), "{full}");
        let damaged = open_error(path, redb::DatabaseError::Storage(redb::StorageError::Corrupted("bad".into())));
        assert!(damaged.is::<Unopenable>(), "{damaged}");
    }
}
