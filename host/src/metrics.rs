//! Prometheus metrics of the host, served at `GET /metrics` in the text
//! exposition format: calls by returner, function and outcome, their
//! latency, calls in flight, guest faults, capability denials, calls
//! refused by a limit, and audit lines the audit log could not take. One
//! registry per process.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a call's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    returner: String,
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    returner: String,
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReturnerLabels {
    returner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    returner: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    returner: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabels {
    returner: String,
    capability: String,
}

/// Kinds of guest fault, as `returner_host_guest_faults_total` labels them.
pub const FAULT_KINDS: &[&str] = &["trap", "deadline", "memory_limit", "limit"];
/// Limits that refuse calls, as `returner_host_limited_total` labels them.
pub const LIMIT_KINDS: &[&str] = &["concurrency", "rate", "mysql_connections", "pool", "http_in_flight", "http_rate", "http_request_bytes", "http_response_bytes"];
/// Capabilities whose checks deny, as `returner_host_denials_total` labels them.
pub const DENYING_CAPABILITIES: &[&str] = &["fs", "etcd", "mysql", "network", "http"];
/// Capabilities with a backend, as `returner_host_backend_errors_total` labels them.
pub const BACKEND_CAPABILITIES: &[&str] = &["etcd", "mysql", "http"];
/// Outcomes of a module reload.
pub const RELOAD_OUTCOMES: &[&str] = &["swapped", "refused"];

/// Latency buckets from 50 µs to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every metric of the host.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ReturnerLabels, Gauge>,
    faults: Family<KindLabels, Counter>,
    denials: Family<CapabilityLabels, Counter>,
    limited: Family<KindLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    backend_errors: Family<CapabilityLabels, Counter>,
    audit_dropped: Counter,
    spool_items: Family<ReturnerLabels, Gauge>,
    spool_bytes: Family<ReturnerLabels, Gauge>,
    spool_oldest: Family<ReturnerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    spool_dead: Family<ReturnerLabels, Gauge>,
    delivered: Family<ReturnerLabels, Counter>,
    retries: Family<ReturnerLabels, Counter>,
    dead_letters: Family<ReturnerLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("returner_host");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<FunctionLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Family::<ReturnerLabels, Gauge>::default();
        let faults = Family::<KindLabels, Counter>::default();
        let denials = Family::<CapabilityLabels, Counter>::default();
        let limited = Family::<KindLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let backend_errors = Family::<CapabilityLabels, Counter>::default();
        let audit_dropped = Counter::default();
        let spool_items = Family::<ReturnerLabels, Gauge>::default();
        let spool_bytes = Family::<ReturnerLabels, Gauge>::default();
        let spool_oldest = Family::<ReturnerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let spool_dead = Family::<ReturnerLabels, Gauge>::default();
        let delivered = Family::<ReturnerLabels, Counter>::default();
        let retries = Family::<ReturnerLabels, Counter>::default();
        let dead_letters = Family::<ReturnerLabels, Counter>::default();
        registry.register("calls", "Returner calls by returner, function and outcome (ok or the error kind)", calls.clone());
        registry.register("call_duration_seconds", "Time from a call's arrival at the runtime to its answer", latency.clone());
        registry.register("calls_in_flight", "Calls of a returner running now", in_flight.clone());
        registry.register("guest_faults", "Calls a guest ended by a fault: trap, deadline, memory_limit, or limit (table elements, result size)", faults.clone());
        registry.register("denials", "Capability operations refused by a grant check", denials.clone());
        registry.register("limited", "Calls refused by a limit: concurrency, rate, mysql_connections, or pool (no free instance slot in the host's pool)", limited.clone());
        registry.register("module_reloads", "Module reloads by outcome: swapped or refused", reloads.clone());
        registry.register(
            "backend_errors",
            "Capability operations that failed in the backend (unreachable, timed out, refused by the server)",
            backend_errors.clone(),
        );
        registry.register(
            "audit_dropped",
            "Audit events not written to server.audit_log because its queue was full (the disk not keeping up)",
            audit_dropped.clone(),
        );
        registry.register("spool_items", "Writes in a returner's spool waiting for delivery", spool_items.clone());
        registry.register("spool_bytes", "Bytes of the writes in a returner's spool waiting for delivery", spool_bytes.clone());
        registry.register("spool_oldest_age_seconds", "Age of the oldest write waiting in a returner's spool (0 when empty)", spool_oldest.clone());
        registry.register("spool_dead_letters", "Writes kept as dead letters of a returner now", spool_dead.clone());
        registry.register("delivered", "Spooled writes delivered to a returner", delivered.clone());
        registry.register("delivery_retries", "Deliveries that failed in a way worth retrying (backend, deadline, limit) and were retried", retries.clone());
        registry.register("dead_lettered", "Spooled writes moved to dead letters because they can never be delivered", dead_letters.clone());
        Self {
            registry, calls, latency, in_flight, faults, denials, limited, reloads, backend_errors, audit_dropped,
            spool_items, spool_bytes, spool_oldest, spool_dead, delivered, retries, dead_letters,
        }
    }

    /// Start every counter and gauge of `returner` at 0 for each label
    /// value known in advance (fault kinds, limits, capabilities, reload
    /// outcomes, and `ok` calls of each function), so an alert or a
    /// `rate()` has a series to match before the first event, not only
    /// after it (Prometheus' "avoid missing metrics").
    pub fn declare_returner(&self, returner: &str, functions: &[&str]) {
        let name = || returner.to_owned();
        let _ = self.in_flight.get_or_create(&ReturnerLabels { returner: name() });
        for function in functions {
            let (function, outcome) = ((*function).to_owned(), "ok".to_owned());
            let _ = self.calls.get_or_create(&CallLabels { returner: name(), function, outcome });
        }
        for kind in FAULT_KINDS {
            let _ = self.faults.get_or_create(&KindLabels { returner: name(), kind: (*kind).into() });
        }
        for kind in LIMIT_KINDS {
            let _ = self.limited.get_or_create(&KindLabels { returner: name(), kind: (*kind).into() });
        }
        for capability in DENYING_CAPABILITIES {
            let _ = self.denials.get_or_create(&CapabilityLabels { returner: name(), capability: (*capability).into() });
        }
        for capability in BACKEND_CAPABILITIES {
            let _ = self.backend_errors.get_or_create(&CapabilityLabels { returner: name(), capability: (*capability).into() });
        }
        let _ = self.delivered.get_or_create(&ReturnerLabels { returner: name() });
        let _ = self.retries.get_or_create(&ReturnerLabels { returner: name() });
        let _ = self.dead_letters.get_or_create(&ReturnerLabels { returner: name() });
        for outcome in RELOAD_OUTCOMES {
            let _ = self.reloads.get_or_create(&ReloadLabels { returner: name(), outcome: (*outcome).into() });
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A call ended with `outcome` (`ok` or an error kind) after `elapsed`.
    pub fn call_done(&self, returner: &str, function: &str, outcome: &str, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels { returner: returner.into(), function: function.into(), outcome: outcome.into() })
            .inc();
        self.latency
            .get_or_create(&FunctionLabels { returner: returner.into(), function: function.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// A call of `returner` started running (`+1`) or ended (`-1`).
    pub fn in_flight(&self, returner: &str, delta: i64) {
        self.in_flight.get_or_create(&ReturnerLabels { returner: returner.into() }).inc_by(delta);
    }

    /// A guest fault of `kind` (`trap`, `deadline`, `memory_limit`, `limit`).
    pub fn fault(&self, returner: &str, kind: &str) {
        self.faults.get_or_create(&KindLabels { returner: returner.into(), kind: kind.into() }).inc();
    }

    /// A capability denial.
    pub fn denial(&self, returner: &str, capability: &str) {
        self.denials
            .get_or_create(&CapabilityLabels { returner: returner.into(), capability: capability.into() })
            .inc();
    }

    /// A capability operation failed in its backend (etcd, MySQL).
    pub fn backend_error(&self, returner: &str, capability: &str) {
        self.backend_errors
            .get_or_create(&CapabilityLabels { returner: returner.into(), capability: capability.into() })
            .inc();
    }

    /// A module reload ended with `outcome` (`swapped`, `refused`).
    pub fn reload(&self, returner: &str, outcome: &str) {
        self.reloads.get_or_create(&ReloadLabels { returner: returner.into(), outcome: outcome.into() }).inc();
    }

    /// An audit line the audit log's queue had no room for.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// A returner's spool holds `items` writes of `bytes` bytes.
    pub fn spool_depth(&self, returner: &str, items: u64, bytes: u64) {
        let labels = ReturnerLabels { returner: returner.into() };
        self.spool_items.get_or_create(&labels).set(items as i64);
        self.spool_bytes.get_or_create(&labels).set(bytes as i64);
    }

    /// A returner's spool keeps `items` dead letters.
    pub fn spool_dead(&self, returner: &str, items: u64) {
        self.spool_dead.get_or_create(&ReturnerLabels { returner: returner.into() }).set(items as i64);
    }

    /// The oldest write in a returner's spool is `age` seconds old.
    pub fn spool_oldest(&self, returner: &str, age: f64) {
        self.spool_oldest.get_or_create(&ReturnerLabels { returner: returner.into() }).set(age);
    }

    /// `n` spooled writes were delivered to `returner`.
    pub fn spool_delivered(&self, returner: &str, n: u64) {
        self.delivered.get_or_create(&ReturnerLabels { returner: returner.into() }).inc_by(n);
    }

    /// A delivery to `returner` failed and will be retried.
    pub fn spool_retry(&self, returner: &str) {
        self.retries.get_or_create(&ReturnerLabels { returner: returner.into() }).inc();
    }

    /// A spooled write of `returner` moved to dead letters.
    pub fn spool_dead_letter(&self, returner: &str) {
        self.dead_letters.get_or_create(&ReturnerLabels { returner: returner.into() }).inc();
    }

    /// A call refused by the limit `kind` (one of [`LIMIT_KINDS`]).
    pub fn limited(&self, returner: &str, kind: &str) {
        self.limited.get_or_create(&KindLabels { returner: returner.into(), kind: kind.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_returner_has_every_known_series_at_zero() {
        let m = Metrics::new();
        m.declare_returner("lc", &["returner", "get_load"]);
        let text = m.encode();
        for series in [
            r#"returner_host_calls_total{returner="lc",function="get_load",outcome="ok"} 0"#,
            r#"returner_host_denials_total{returner="lc",capability="mysql"} 0"#,
            r#"returner_host_guest_faults_total{returner="lc",kind="deadline"} 0"#,
            r#"returner_host_limited_total{returner="lc",kind="rate"} 0"#,
            r#"returner_host_backend_errors_total{returner="lc",capability="etcd"} 0"#,
            r#"returner_host_module_reloads_total{returner="lc",outcome="refused"} 0"#,
            r#"returner_host_calls_in_flight{returner="lc"} 0"#,
            "returner_host_audit_dropped_total 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.call_done("lc", "get_load", "ok", Duration::from_millis(1));
        m.denial("lc", "etcd");
        m.in_flight("lc", 1);
        m.backend_error("lc", "mysql");
        m.audit_dropped();
        let text = m.encode();
        assert!(text.contains(r#"returner_host_calls_total{returner="lc",function="get_load",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"returner_host_denials_total{returner="lc",capability="etcd"} 1"#), "{text}");
        assert!(text.contains(r#"returner_host_backend_errors_total{returner="lc",capability="mysql"} 1"#), "{text}");
        assert!(text.contains(r#"returner_host_calls_in_flight{returner="lc"} 1"#), "{text}");
        assert!(text.contains("returner_host_audit_dropped_total 1"), "{text}");
        assert!(text.contains("returner_host_call_duration_seconds_bucket"), "{text}");
    }
}
