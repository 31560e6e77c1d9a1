//! Audit events: one structured `tracing` event per capability denial and
//! per guest fault, on the dedicated target `returner_host::audit`, so
//! operators can route them apart (and `server.audit_log` writes them as JSON
//! lines). Events raised during a call carry the call's span: returner,
//! function and module sha256. No secret is ever a field. What a guest
//! chose (a key, a table name) is escaped onto one line.
//!
//! A call has a budget of [`MAX_AUDIT_EVENTS_PER_CALL`] events (see
//! [`budgeted`]); the rest are counted, not written, and one summary event
//! at the end of the call says how many. Metrics count every one.

use std::cell::Cell;
use std::future::Future;

use crate::guest_text::one_line;

/// The tracing target of every audit event.
pub const TARGET: &str = "returner_host::audit";

/// A guest looping over a denied host call cannot flood the audit log (and
/// the disk under it, and the reader after it): past this many events in one
/// call, the rest are dropped and one summary event gives their number.
pub const MAX_AUDIT_EVENTS_PER_CALL: u32 = 100;

/// What one call has written and dropped so far.
#[derive(Default)]
struct Budget {
    written: Cell<u32>,
    dropped: Cell<u64>,
    /// A probe's call (`Returner::probe`): nothing is audited or counted.
    silent: bool,
}

tokio::task_local! {
    /// The budget of the call running on this task; wasmtime runs a guest's
    /// async host calls inside the future of its call, so they see it.
    static BUDGET: Budget;
}

/// Run one call's future with a fresh audit budget; its output and how many
/// audit events it dropped. Outside such a scope (a capability's unit
/// tests) events are not capped.
pub async fn budgeted<F: Future>(call: F) -> (F::Output, u64) {
    BUDGET
        .scope(Budget::default(), async move {
            let output = call.await;
            let dropped = BUDGET.with(|b| b.dropped.get());
            (output, dropped)
        })
        .await
}

/// Run a probe call's future: its denials are neither audited nor counted
/// (it has no grants, so every capability it tries is refused by design).
pub async fn silenced<F: Future>(call: F) -> (F::Output, u64) {
    BUDGET.scope(Budget { silent: true, ..Budget::default() }, async move { (call.await, 0) }).await
}

/// Whether the running call is a probe's.
fn silent() -> bool {
    BUDGET.try_with(|b| b.silent).unwrap_or(false)
}

/// Whether the running call may write one more event; counts it either way.
fn admit() -> bool {
    BUDGET
        .try_with(|b| {
            if b.written.get() < MAX_AUDIT_EVENTS_PER_CALL {
                b.written.set(b.written.get() + 1);
                true
            } else {
                b.dropped.set(b.dropped.get().saturating_add(1));
                false
            }
        })
        .unwrap_or(true)
}

/// Record that `returner` was refused `operation` on `target` through
/// `capability`.
pub fn denied(returner: &str, capability: &str, operation: &str, target: &str) {
    if silent() {
        return;
    }
    crate::metrics::metrics().denial(returner, capability);
    if !admit() {
        return;
    }
    let (operation, target) = (one_line(operation), one_line(target));
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        capability,
        operation = &*operation,
        target = &*target,
        outcome = "denied",
        "capability denied"
    );
}

/// Record, at the end of a call of `returner`, that `dropped` of its audit
/// events were over [`MAX_AUDIT_EVENTS_PER_CALL`] and not written.
pub fn dropped_events(returner: &str, module_sha256: &str, function: &str, dropped: u64) {
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        module_sha256,
        capability = "audit",
        operation = function,
        target = function,
        outcome = "dropped",
        dropped,
        "more than {MAX_AUDIT_EVENTS_PER_CALL} audit events in one call; {dropped} more were not written"
    );
}

/// Record that a call of `returner` (module `module_sha256`) ended in a guest
/// fault of `kind` (`trap`, `deadline`, `memory_limit`, or `limit` for a
/// table or result-size limit) in `function`. Not counted against the
/// call's budget: a call ends in at most one fault, and it is the event that
/// says why the call failed.
pub fn fault(returner: &str, module_sha256: &str, function: &str, kind: &str, message: &str) {
    crate::metrics::metrics().fault(returner, kind);
    let message = one_line(message);
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        module_sha256,
        capability = "runtime",
        operation = function,
        target = function,
        outcome = kind,
        message = &*message,
        "guest fault"
    );
}

/// Record that a new module for `returner` (sha256 `module_sha256`, empty
/// when it could not be read) was refused at a reload; the old one serves on.
pub fn module_refused(returner: &str, module_sha256: &str, source: &str, reason: &str) {
    crate::metrics::metrics().reload(returner, "refused");
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        module_sha256,
        capability = "module",
        operation = "reload",
        target = source,
        outcome = "refused",
        message = reason,
        "module refused"
    );
}

/// A spooled write that can never be delivered was moved to dead letters.
pub fn dead_letter(returner: &str, seq: u64, kind: &str, message: &str) {
    let message = one_line(message);
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        capability = "spool",
        operation = "deliver",
        target = seq,
        outcome = "dead_letter",
        kind,
        message = &*message,
        "write moved to dead letters; `returner-host spool dead-letters list` shows it"
    );
}

/// Record that the compiled form of module `module_sha256` kept at `path`
/// did not carry the host's seal: it was not loaded, and the module was
/// compiled again from its `.wasm`.
pub fn compiled_module_tampered(module_sha256: &str, path: &str, reason: &str) {
    tracing::warn!(
        target: "returner_host::audit",
        module_sha256,
        capability = "module",
        operation = "cache",
        target = path,
        outcome = "tampered",
        message = reason,
        "compiled module failed its check; compiled again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_writes_the_cap_and_counts_the_rest() {
        let ((), dropped) = budgeted(async {
            let written = (0..MAX_AUDIT_EVENTS_PER_CALL + 250).filter(|_| admit()).count();
            assert_eq!(written, MAX_AUDIT_EVENTS_PER_CALL as usize);
        })
        .await;
        assert_eq!(dropped, 250);
        let ((), dropped) = budgeted(async { assert!(admit(), "each call starts afresh") }).await;
        assert_eq!(dropped, 0);
        assert!((0..MAX_AUDIT_EVENTS_PER_CALL + 1).all(|_| admit()), "outside a call nothing is capped");
    }
}
