//! Audit events: one structured `tracing` event per capability denial and
//! per guest fault, on the dedicated target `returner_host::audit`, so
//! operators can route them apart (and `server.audit_log` writes them as JSON
//! lines). Events raised during a call carry the call's span: returner,
//! function and module sha256. No secret is ever a field.

/// The tracing target of every audit event.
pub const TARGET: &str = "returner_host::audit";

/// Record that `returner` was refused `operation` on `target` through
/// `capability`.
pub fn denied(returner: &str, capability: &str, operation: &str, target: &str) {
    crate::metrics::metrics().denial(returner, capability);
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        capability,
        operation,
        target,
        outcome = "denied",
        "capability denied"
    );
}

/// Record that a call of `returner` (module `module_sha256`) ended in a guest
/// fault of `kind` (`trap`, `deadline`, `memory_limit`, or `limit` for a
/// table or result-size limit) in `function`.
pub fn fault(returner: &str, module_sha256: &str, function: &str, kind: &str, message: &str) {
    crate::metrics::metrics().fault(returner, kind);
    tracing::warn!(
        target: "returner_host::audit",
        returner,
        module_sha256,
        capability = "runtime",
        operation = function,
        target = function,
        outcome = kind,
        message,
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
