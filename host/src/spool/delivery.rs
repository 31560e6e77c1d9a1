//! Delivery: one task per returner drains its queue in order. Consecutive
//! `event_return` writes go to the guest as one call (and consecutive
//! `returner` writes as one batch where the module exports one); a backend
//! failure is retried, head of line, with capped exponential backoff; a
//! write that can never succeed goes to dead letters, found by splitting
//! its group, and the rest are delivered.
//!
//! A group's call starts while the call ahead of it is still storing, so the
//! guest's own work on it overlaps the backend's work on the one ahead; its
//! requests wait for its [`Turn`], given only once the call ahead succeeded,
//! so the backend still sees the queue's order (not for a returner that
//! writes to a directory, which does not wait for turns).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::item::Item;
use super::store::Op;
use super::{QueueState, Spool, Trouble};
use crate::caps::turn::Turn;
use crate::dispatch::{ReturnerHost, parse_call};
use crate::error::{CallError, ErrorKind};
use crate::runtime::Call;

/// The first wait after a failed delivery; it doubles up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Failures in a row, each of which may pass later, after which a group of
/// several items is delivered in halves.
const HALVE_AFTER: u32 = 3;


/// The delivery tasks, to stop them.
pub struct Delivery {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `group`, no longer shared with the call that had it.
fn unshared(group: Arc<Group>) -> Group {
    Arc::try_unwrap(group).unwrap_or_else(|shared| (*shared).clone())
}

impl Delivery {
    pub(super) fn start(spool: Arc<Spool>, host: Arc<ReturnerHost>, queues: Vec<Arc<QueueState>>) -> Self {
        let (stop, _) = watch::channel(false);
        let tasks = queues
            .into_iter()
            .map(|q| {
                let worker = Worker { spool: spool.clone(), host: host.clone(), q, stop: stop.subscribe(), cursor: 0, flight: None };
                tokio::spawn(worker.run())
            })
            .collect();
        Self { stop, tasks }
    }

    /// Deliver until every queue is drained or `timeout` has passed, then
    /// stop the tasks (a call in flight finishes first). What is left stays
    /// in the spool for the next start.
    pub async fn drain_and_stop(self, spool: &Spool, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !spool.drained() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for s in spool.status().await {
            if s.counts.items > 0 {
                tracing::warn!(
                    returner = %s.returner, items = s.counts.items, bytes = s.counts.bytes,
                    "writes not delivered before the drain timeout (server.spool.drain_timeout_ms); they stay in the spool and go after the next start"
                );
            }
        }
    }
}

/// A group of consecutive items delivered in one guest call.
#[derive(Clone)]
struct Group {
    /// Sequence numbers, sizes and items, in order.
    items: Vec<(u64, u64, Item)>,
}

/// Delivery was asked to stop before a group was delivered.
struct Stopped;

/// A group's call, started and not landed yet.
struct Flight {
    group: Arc<Group>,
    task: tokio::task::JoinHandle<Result<(), CallError>>,
}

struct Worker {
    spool: Arc<Spool>,
    host: Arc<ReturnerHost>,
    q: Arc<QueueState>,
    stop: watch::Receiver<bool>,
    /// The last sequence number handed to a call (reads go on after it).
    cursor: u64,
    /// The call started last, while it has not landed.
    flight: Option<Flight>,
}

impl Worker {
    async fn run(mut self) {
        self.drive().await;
        // Stopping: the call in flight finishes; if it failed, its group
        // stays in the spool for the next start.
        if let Some(flight) = self.flight.take()
            && let Ok(Ok(())) = flight.task.await
        {
            self.delivered(&flight.group);
        }
    }

    /// Deliver until asked to stop.
    async fn drive(&mut self) {
        let cfg = self.spool.config().clone();
        loop {
            if *self.stop.borrow() {
                return;
            }
            // Everything committed up to here is visible to the read below.
            let committed = self.q.accepted.load(Ordering::Acquire);
            let (reply, answer) = oneshot::channel();
            self.spool.send(Op::Read {
                queue: self.q.clone(),
                after: self.cursor,
                max_items: cfg.batch_max_items,
                max_bytes: cfg.batch_max_bytes,
                reply,
            });
            let items = match answer.await {
                Ok(Ok(items)) => items,
                Ok(Err(e)) => {
                    tracing::error!(returner = %self.q.name, error = ?e, "cannot read the spool; trying again in a second");
                    if self.pause(Duration::from_secs(1)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            };
            if items.is_empty() {
                if self.flight.is_some() {
                    if self.land().await.is_err() {
                        return;
                    }
                    continue;
                }
                self.q.head_ms.store(0, Ordering::Release);
                crate::metrics::metrics().spool_oldest(&self.q.name, 0.0);
                self.q.mark_delivered(committed);
                tokio::select! {
                    _ = self.q.wake.notified() => {}
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            let mut decoded = Vec::with_capacity(items.len());
            for (seq, bytes) in items {
                let size = bytes.len() as u64;
                match Item::decode(&bytes) {
                    Some(item) => {
                        if decoded.is_empty() {
                            self.q.head_ms.store(item.accepted_ms, Ordering::Release);
                            let age = super::item::now_ms().saturating_sub(item.accepted_ms) as f64 / 1000.0;
                            crate::metrics::metrics().spool_oldest(&self.q.name, age);
                        }
                        decoded.push((seq, size, item));
                    }
                    None => {
                        // Not a layout this host knows: it can never be
                        // delivered. Buried in its place in the queue.
                        let e = CallError::new(ErrorKind::Invalid, "the spooled write's layout is unknown to this host");
                        let ahead = std::mem::take(&mut decoded);
                        if self.send_all(ahead).await.is_err() || self.land().await.is_err() || self.bury(seq, &e).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if self.send_all(decoded).await.is_err() {
                return;
            }
        }
    }

    /// Deliver `items`, in the groups [`groups`] makes of them.
    async fn send_all(&mut self, items: Vec<(u64, u64, Item)>) -> Result<(), Stopped> {
        let batch_returns = self.host.returner(&self.q.name).is_some_and(|r| r.supports_batch());
        for group in groups(items, batch_returns) {
            self.send(group).await?;
        }
        Ok(())
    }

    /// Deliver `group` after the groups handed out before it. Its call
    /// starts now, beside the call ahead of it, and reaches the backend once
    /// that one succeeded; if that one failed, it reached nothing, and goes
    /// again once the one ahead is delivered the usual way. A returner that
    /// does not wait for turns gets one call at a time.
    async fn send(&mut self, group: Group) -> Result<(), Stopped> {
        if let Some((seq, _, _)) = group.items.last() {
            self.cursor = self.cursor.max(*seq);
        }
        if !self.host.returner(&self.q.name).is_some_and(|r| r.waits_for_turns()) {
            self.land().await?;
            return self.deliver(group).await;
        }
        let Some(ahead) = self.flight.take() else {
            self.flight = Some(self.start(group, Turn::now()));
            return Ok(());
        };
        let (giver, turn) = Turn::later();
        let next = self.start(group, turn);
        match ahead.task.await {
            Ok(Ok(())) => {
                giver.give();
                self.delivered(&ahead.group);
                self.flight = Some(next);
                Ok(())
            }
            failed => {
                giver.withhold();
                let _ = next.task.await;
                self.redeliver(ahead.group, failed).await?;
                self.flight = Some(self.start(unshared(next.group), Turn::now()));
                Ok(())
            }
        }
    }

    /// Start the call of `group`, its requests waiting for `turn`.
    fn start(&self, group: Group, turn: Turn) -> Flight {
        let group = Arc::new(group);
        let (host, name, shared) = (self.host.clone(), self.q.name.clone(), group.clone());
        let task = tokio::spawn(async move { call(&host, &name, &shared, turn).await });
        Flight { group, task }
    }

    /// Land the call in flight, if any: its group is delivered if it
    /// succeeded, and delivered again the usual way if not.
    async fn land(&mut self) -> Result<(), Stopped> {
        let Some(flight) = self.flight.take() else { return Ok(()) };
        match flight.task.await {
            Ok(Ok(())) => {
                self.delivered(&flight.group);
                Ok(())
            }
            failed => self.redeliver(flight.group, failed).await,
        }
    }

    /// A started call of `group` failed: go on as after any first failed
    /// attempt (retried, halved, split or buried as the error says). Its
    /// deadline did not run while it waited for its turn, so its error
    /// means what it would have meant had it started later.
    async fn redeliver(&mut self, group: Arc<Group>, failed: Result<Result<(), CallError>, tokio::task::JoinError>) -> Result<(), Stopped> {
        let outcome = failed.unwrap_or_else(|e| Err(CallError::new(ErrorKind::Internal, format!("the delivery task ended: {e}"))));
        self.deliver_from(unshared(group), FIRST_RETRY, Some(outcome)).await
    }

    /// Deliver a group, retrying what may succeed later; on a failure that
    /// never will, deliver its items one by one so only the culprit goes to
    /// dead letters.
    async fn deliver(&mut self, group: Group) -> Result<(), Stopped> {
        self.deliver_from(group, FIRST_RETRY, None).await
    }

    /// [`deliver`](Self::deliver), the first retry after `wait`. A group of
    /// several items that fails [`HALVE_AFTER`] times in a row in a way that
    /// may pass later is delivered in two halves, in order, each retried
    /// the same way: a batch too large for the backend's time or size
    /// limits gets through in parts instead of being retried whole for
    /// ever; in an outage the halves wait as the whole would have. `tried`
    /// is the outcome of an attempt already made, if there was one.
    async fn deliver_from(&mut self, group: Group, mut wait: Duration, mut tried: Option<Result<(), CallError>>) -> Result<(), Stopped> {
        let mut failures = 0;
        loop {
            let outcome = match tried.take() {
                Some(outcome) => outcome,
                None => call(&self.host, &self.q.name, &group, Turn::now()).await,
            };
            match outcome {
                Ok(()) => {
                    self.delivered(&group);
                    return Ok(());
                }
                Err(e) if group.items.len() > 1 && (!retryable(&e) || e.kind == ErrorKind::Deadline) => {
                    // Find the item that fails (or, past the deadline, give
                    // each its own call's time).
                    for (seq, size, item) in group.items {
                        Box::pin(self.deliver(Group { items: vec![(seq, size, item)] })).await?;
                    }
                    return Ok(());
                }
                Err(e) if retryable(&e) => {
                    self.failing(&e);
                    crate::metrics::metrics().spool_retry(&self.q.name);
                    self.pause(wait).await?;
                    wait = (wait * 2).min(self.spool.config().retry_max);
                    failures += 1;
                    if failures >= HALVE_AFTER && group.items.len() > 1 {
                        let mut first = group.items;
                        let second = first.split_off(first.len() / 2);
                        tracing::info!(
                            returner = %self.q.name, items = first.len() + second.len(), failures, error = %e.message,
                            "a batch keeps failing; delivering it in two halves"
                        );
                        Box::pin(self.deliver_from(Group { items: first }, wait, None)).await?;
                        return Box::pin(self.deliver_from(Group { items: second }, wait, None)).await;
                    }
                }
                Err(e) => {
                    let (seq, _, _) = &group.items[0];
                    self.bury(*seq, &e).await?;
                    self.recovered();
                    return Ok(());
                }
            }
        }
    }

    fn delivered(&mut self, group: &Group) {
        let last = group.items.last().map_or(self.cursor, |(seq, _, _)| *seq);
        self.spool.send(Op::Delivered {
            queue: self.q.clone(),
            items: group.items.iter().map(|(seq, size, _)| (*seq, *size)).collect(),
        });
        crate::metrics::metrics().spool_delivered(&self.q.name, group.items.len() as u64);
        self.recovered();
        self.cursor = self.cursor.max(last);
        self.q.mark_delivered(last);
    }

    /// Move the item `seq` to dead letters with `e`, audited and counted.
    async fn bury(&mut self, seq: u64, e: &CallError) -> Result<(), Stopped> {
        let (reply, answer) = oneshot::channel();
        self.spool.send(Op::Bury {
            queue: self.q.clone(),
            seq,
            error_kind: e.kind.as_str().to_owned(),
            error: e.message.clone(),
            reply,
        });
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                // Not buried: it stays at the head; try again.
                tracing::error!(returner = %self.q.name, seq, error = ?err, "cannot move a write to dead letters");
                self.pause(Duration::from_secs(1)).await?;
                return Box::pin(self.bury(seq, e)).await;
            }
            Err(_) => return Err(Stopped),
        }
        crate::caps::audit::dead_letter(&self.q.name, seq, e.kind.as_str(), &e.message);
        crate::metrics::metrics().spool_dead_letter(&self.q.name);
        self.cursor = self.cursor.max(seq);
        self.q.mark_delivered(seq);
        Ok(())
    }

    /// Delivery failed with an error worth retrying: log it when it starts.
    fn failing(&self, e: &CallError) {
        let mut trouble = self.q.trouble.lock().unwrap_or_else(|p| p.into_inner());
        match trouble.as_mut() {
            Some(t) => t.error = e.message.clone(),
            None => {
                let c = self.q.counts();
                tracing::warn!(
                    returner = %self.q.name, kind = e.kind.as_str(), error = %e.message, held = c.items,
                    "cannot deliver; holding writes in the spool and retrying until it works"
                );
                *trouble = Some(Trouble { since: Instant::now(), error: e.message.clone() });
            }
        }
    }

    /// A delivery went through: if it had been failing, say so once.
    fn recovered(&self) {
        let mut trouble = self.q.trouble.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trouble.take() {
            tracing::info!(
                returner = %self.q.name, failed_for_s = t.since.elapsed().as_secs_f64(), held = self.q.counts().items,
                "delivering again; the writes held meanwhile follow in order"
            );
        }
    }

    /// Sleep for `d`, or until delivery is asked to stop.
    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.changed() => Err(Stopped),
        }
    }
}

/// One guest call for `group`, of returner `name`, its requests waiting for `turn`.
async fn call(host: &ReturnerHost, name: &str, group: &Group, turn: Turn) -> Result<(), CallError> {
    let Some(returner) = host.returner(name) else {
        return Err(CallError::new(ErrorKind::Internal, format!("returner `{name}` is not loaded")));
    };
    let runtime = host.runtime();
    let calls: Vec<Call> = group
        .items
        .iter()
        .map(|(_, _, item)| parse_call(item.function, &item.body))
        .collect::<Result<_, _>>()
        .map_err(|e| CallError::new(ErrorKind::Invalid, format!("the spooled write no longer parses: {}", e.message)))?;
    if calls.len() == 1 {
        return returner.call_in_turn(runtime, &calls[0], turn).await.map(drop);
    }
    match &calls[0] {
        Call::EventReturn { .. } => {
            let events = calls
                .into_iter()
                .flat_map(|c| match c {
                    Call::EventReturn { events } => events,
                    _ => Vec::new(),
                })
                .collect();
            returner.call_in_turn(runtime, &Call::EventReturn { events }, turn).await.map(drop)
        }
        Call::Returner(_) => {
            let rets: Vec<_> = calls
                .into_iter()
                .filter_map(|c| match c {
                    Call::Returner(r) => Some(r),
                    _ => None,
                })
                .collect();
            returner.call_batch_in_turn(runtime, &rets, turn).await
        }
        _ => unreachable!("only returns and events are grouped"),
    }
}

/// Whether a delivery that failed with `e` may succeed later: the backend
/// was down or slow (the call ran out of time waiting on it), or a limit of
/// the host was reached (concurrency, rate, instance slots). Anything else
/// (the guest refused the write, was denied, trapped, ran out of memory or
/// computed past its deadline) fails the same way every time.
fn retryable(e: &CallError) -> bool {
    !e.by_the_guest
        && matches!(e.kind, ErrorKind::Backend | ErrorKind::Deadline | ErrorKind::Limit | ErrorKind::Internal | ErrorKind::Unavailable)
}

/// Split `items` into delivery groups: runs of `event_return` (one call),
/// runs of `returner` when the module takes batches, and single items.
fn groups(items: Vec<(u64, u64, Item)>, batch_returns: bool) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for entry in items {
        let joins = |g: &Group| {
            let f = g.items[0].2.function;
            f == entry.2.function && (f == "event_return" || (f == "returner" && batch_returns))
        };
        match out.last_mut() {
            Some(g) if joins(g) => g.items.push(entry),
            _ => out.push(Group { items: vec![entry] }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(function: &str) -> (u64, u64, Item) {
        (0, 0, Item::new(function, b"{}").unwrap())
    }

    #[test]
    fn runs_of_events_and_batchable_returns_share_a_call() {
        let items = ["returner", "returner", "save_load", "event_return", "event_return", "returner", "update_endtime"];
        let shape = |batch| -> Vec<usize> {
            groups(items.iter().map(|f| item(f)).collect(), batch).iter().map(|g| g.items.len()).collect()
        };
        assert_eq!(shape(true), vec![2, 1, 2, 1, 1]);
        assert_eq!(shape(false), vec![1, 1, 1, 2, 1, 1]);
    }

    #[test]
    fn only_failures_that_may_pass_later_are_retried() {
        for kind in [ErrorKind::Backend, ErrorKind::Deadline, ErrorKind::Limit] {
            assert!(retryable(&CallError::new(kind, "")), "{kind:?}");
            assert!(!retryable(&CallError::new(kind, "").by_the_guest()), "{kind:?} by the guest");
        }
        for kind in [ErrorKind::Invalid, ErrorKind::Denied, ErrorKind::Unsupported, ErrorKind::Trap, ErrorKind::MemoryLimit] {
            assert!(!retryable(&CallError::new(kind, "")), "{kind:?}");
        }
    }
}
