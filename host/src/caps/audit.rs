//! Audit events: one structured `tracing` event per denial, on the dedicated
//! target `returner_host::audit`, so operators can route them apart.

/// The tracing target of every audit event.
pub const TARGET: &str = "returner_host::audit";

/// Record that `returner` was refused `operation` on `target` through
/// `capability`.
pub fn denied(returner: &str, capability: &str, operation: &str, target: &str) {
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
