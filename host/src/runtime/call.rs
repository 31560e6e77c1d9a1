//! One call of a returner function (or of the batch export): a concurrency
//! slot, a fresh store with the returner's grants and limits, the guest
//! export, and the fault (if any) turned into a [`CallError`] that names it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use tracing::Instrument as _;
use wasmtime::component::ResourceTable;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::module::{BatchParams, BatchResults};
use super::{CallState, MemoryLimiter, Module, STDERR_CAPTURE_BYTES};
use crate::bindings::{BATCH_INTERFACE, Event, JobReturn};
use crate::caps::fs::{FsGrant, FsMode};
use crate::caps::http::HttpGranted;
use crate::caps::turn::Turn;
use crate::caps::{Backends, CallCaps, ResolvedGrants};
use crate::config::{Limits, ReturnerConfig};
use crate::error::{CallError, ErrorKind};

/// A call of one of Salt's returner functions, with typed arguments. Fields
/// are Salt's parameters under Salt's names.
#[allow(missing_docs)]
#[derive(Clone, Debug)]
pub enum Call {
    /// `returner(ret)`
    Returner(JobReturn),
    /// `save_load(jid, load, minions)`; `load` is JSON text.
    SaveLoad { jid: String, load: String, minions: Option<Vec<String>> },
    /// `get_load(jid)`
    GetLoad { jid: String },
    /// `get_jid(jid)`
    GetJid { jid: String },
    /// `get_fun(fun)`
    GetFun { fun: String },
    /// `get_jids()`
    GetJids,
    /// `get_jids_filter(count, filter_find_job)`
    GetJidsFilter { count: u32, filter_find_job: bool },
    /// `get_minions()`
    GetMinions,
    /// `prep_jid(nocache, passed_jid)`
    PrepJid { nocache: bool, passed_jid: Option<String> },
    /// `save_minions(jid, minions, syndic_id)`
    SaveMinions { jid: String, minions: Vec<String>, syndic_id: Option<String> },
    /// `clean_old_jobs()`
    CleanOldJobs,
    /// `event_return(events)`
    EventReturn { events: Vec<Event> },
    /// `update_endtime(jid, time)`
    UpdateEndtime { jid: String, time: String },
    /// `get_endtime(jid)`
    GetEndtime { jid: String },
}

impl Output {
    /// Bytes of the answer as the guest gave it.
    fn size(&self) -> usize {
        match self {
            Output::Unit | Output::OptionalString(None) => 0,
            Output::Json(s) | Output::String(s) | Output::OptionalString(Some(s)) => s.len(),
            Output::Strings(list) => list.iter().map(String::len).sum(),
        }
    }
}

impl Call {
    /// Salt's name of the function.
    pub fn function(&self) -> &'static str {
        match self {
            Call::Returner(_) => "returner",
            Call::SaveLoad { .. } => "save_load",
            Call::GetLoad { .. } => "get_load",
            Call::GetJid { .. } => "get_jid",
            Call::GetFun { .. } => "get_fun",
            Call::GetJids => "get_jids",
            Call::GetJidsFilter { .. } => "get_jids_filter",
            Call::GetMinions => "get_minions",
            Call::PrepJid { .. } => "prep_jid",
            Call::SaveMinions { .. } => "save_minions",
            Call::CleanOldJobs => "clean_old_jobs",
            Call::EventReturn { .. } => "event_return",
            Call::UpdateEndtime { .. } => "update_endtime",
            Call::GetEndtime { .. } => "get_endtime",
        }
    }
}

/// The function name a call of the batch export goes by in metrics, logs
/// and audit events, beside Salt's names of [`Call::function`]. Not one of
/// Salt's functions: the ingest API does not offer it.
pub const RETURNER_BATCH: &str = "returner_batch";

/// What one guest call runs: one of Salt's functions, or the batch export.
#[derive(Clone, Copy)]
enum Invocation<'a> {
    Salt(&'a Call),
    Batch(&'a [JobReturn]),
}

impl Invocation<'_> {
    fn function(self) -> &'static str {
        match self {
            Invocation::Salt(call) => call.function(),
            Invocation::Batch(_) => RETURNER_BATCH,
        }
    }
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing (`None` in Salt).
    Unit,
    /// JSON text.
    Json(String),
    /// A list of strings (minion ids).
    Strings(Vec<String>),
    /// One string (a jid).
    String(String),
    /// A string or nothing (an end time).
    OptionalString(Option<String>),
}

/// A loaded returner: its module, grants, limits, concurrency slots, rate
/// and the usage of its directory.
pub struct Returner {
    name: Arc<str>,
    backends: Backends,
    module: Module,
    config: ReturnerConfig,
    /// What its grants resolved to, shared by every call: its read-write
    /// `fs` grant's usage (kept by the returner's next module or settings
    /// while its `fs` grant stays the same), its etcd grant, and its http
    /// grant with the requests in flight and the rate its calls share (kept
    /// while its http grant stays the same).
    resolved: ResolvedGrants,
    /// Shared with the returner's next module or settings after a reload,
    /// while its limits stay the same, so they hold across a swap.
    slots: Arc<Semaphore>,
    rate: Option<Arc<RateLimiter>>,
    /// A probe (see [`Returner::probe`]): its calls are not counted in the
    /// metrics nor logged above debug.
    probe: bool,
}

impl Returner {
    /// A returner serving `config` with `module`. Walks its `fs` grant's
    /// directory, if read-write, to measure what it holds.
    pub fn new(config: ReturnerConfig, module: Module, backends: Backends) -> Self {
        declare_batch_metrics(&config.name, &module);
        Self {
            name: Arc::from(config.name.as_str()),
            backends,
            resolved: ResolvedGrants {
                fs_usage: config.grants.fs.as_ref().and_then(FsGrant::measure),
                etcd: config.grants.etcd.clone().map(Arc::new),
                http: config.grants.http.as_ref().map(|g| Arc::new(HttpGranted::new(g))),
            },
            slots: Arc::new(Semaphore::new(config.limits.max_concurrency as usize)),
            rate: config.limits.rate.map(|r| Arc::new(RateLimiter::new(r.per_second, r.burst))),
            module,
            config,
            probe: false,
        }
    }

    /// A returner that only finds out what this one's module implements:
    /// the same name, module and limits, but no grants, no options, at most
    /// `deadline` per call, and calls neither counted in the metrics nor
    /// audited.
    pub fn probe(&self, deadline: std::time::Duration) -> Self {
        let mut config = crate::dispatch::sandbox_config(&self.name, self.config.module.clone());
        config.limits = Limits { deadline: deadline.min(self.config.limits.deadline), rate: None, ..self.config.limits };
        Self { probe: true, ..Self::new(config, self.module.clone(), Backends::default()) }
    }

    /// The same returner serving `module` under `config` (its grants,
    /// limits and options); calls in flight finish with the old ones. The
    /// concurrency slots and the rate limiter carry over unless `config`
    /// changes them; then new calls count against fresh ones.
    pub fn next(&self, module: Module, config: ReturnerConfig) -> Self {
        let slots = if config.limits.max_concurrency == self.config.limits.max_concurrency {
            self.slots.clone()
        } else {
            Arc::new(Semaphore::new(config.limits.max_concurrency as usize))
        };
        let rate = if config.limits.rate == self.config.limits.rate {
            self.rate.clone()
        } else {
            config.limits.rate.map(|r| Arc::new(RateLimiter::new(r.per_second, r.burst)))
        };
        // A new directory or quota is measured again; the same one keeps its count.
        let fs_usage = if config.grants.fs == self.config.grants.fs {
            self.resolved.fs_usage.clone()
        } else {
            config.grants.fs.as_ref().and_then(FsGrant::measure)
        };
        let http = if config.grants.http == self.config.grants.http {
            self.resolved.http.clone()
        } else {
            config.grants.http.as_ref().map(|g| Arc::new(HttpGranted::new(g)))
        };
        let resolved = ResolvedGrants { fs_usage, etcd: config.grants.etcd.clone().map(Arc::new), http };
        declare_batch_metrics(&self.name, &module);
        Self { name: self.name.clone(), backends: self.backends.clone(), module, config, resolved, slots, rate, probe: self.probe }
    }

    /// Its config.
    pub fn config(&self) -> &ReturnerConfig {
        &self.config
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Whether its module exports `salt:returner/batch`, so that
    /// [`Returner::call_batch`] can store several returns in one call.
    pub fn supports_batch(&self) -> bool {
        self.module.supports_batch()
    }

    /// Whether everything its calls change goes through a capability that
    /// waits for the call's [`Turn`] (etcd, MySQL, HTTP): true unless it may
    /// write to a directory, which it does without waiting. Only then may a
    /// call start before the one ahead of it has ended.
    pub fn waits_for_turns(&self) -> bool {
        self.config.grants.fs.as_ref().is_none_or(|fs| fs.mode != FsMode::Rw)
    }

    /// Run one call in a fresh instance. A guest fault ends this call only.
    pub async fn call(&self, runtime: &super::Runtime, call: &Call) -> Result<Output, CallError> {
        self.call_in_turn(runtime, call, Turn::now()).await
    }

    /// [`Returner::call`], its requests to the backends waiting for `turn`
    /// (its deadline does not run while they wait).
    pub async fn call_in_turn(&self, runtime: &super::Runtime, call: &Call, turn: Turn) -> Result<Output, CallError> {
        self.invoke(runtime, Invocation::Salt(call), turn).await
    }

    /// Store `rets` with one call of the module's batch export, in one fresh
    /// instance, in order: what `rets.len()` calls of `returner` would store.
    /// Limits, metrics (function [`RETURNER_BATCH`]) and faults are those of
    /// one call; the deadline is one call's, for the whole batch.
    ///
    /// `Ok` means every return is stored. On an error none or some are, and
    /// the caller may deliver any of them again: the kinds mean what they
    /// mean for `returner` (`backend` is worth a retry; `invalid`, `denied`
    /// and `unsupported` from the guest never succeed, and splitting the
    /// batch finds the return that fails).
    ///
    /// A module without the batch export ([`Returner::supports_batch`] is
    /// false) answers `unsupported` at once, without a call: deliver its
    /// returns with one [`Call::Returner`] each. An empty `rets` is `Ok`
    /// without a call.
    pub async fn call_batch(&self, runtime: &super::Runtime, rets: &[JobReturn]) -> Result<(), CallError> {
        self.call_batch_in_turn(runtime, rets, Turn::now()).await
    }

    /// [`Returner::call_batch`], its requests to the backends waiting for
    /// `turn` (its deadline does not run while they wait).
    pub async fn call_batch_in_turn(&self, runtime: &super::Runtime, rets: &[JobReturn], turn: Turn) -> Result<(), CallError> {
        if !self.supports_batch() {
            return Err(CallError::new(
                ErrorKind::Unsupported,
                format!(
                    "returner `{}`'s module does not export {BATCH_INTERFACE}; deliver its returns with one `returner` call each",
                    self.name
                ),
            ));
        }
        if rets.is_empty() {
            return Ok(());
        }
        self.invoke(runtime, Invocation::Batch(rets), turn).await.map(|_| ())
    }

    async fn invoke(&self, runtime: &super::Runtime, invocation: Invocation<'_>, turn: Turn) -> Result<Output, CallError> {
        let function = invocation.function();
        let span = tracing::info_span!(
            "call",
            returner = %self.name,
            function,
            module_sha256 = %self.module.info().sha256,
            returns = tracing::field::Empty
        );
        if let Invocation::Batch(rets) = invocation {
            span.record("returns", rets.len());
        }
        let started = Instant::now();
        let limited = self.call_limited(runtime, invocation, turn).instrument(span.clone());
        let (result, audit_dropped) = if self.probe {
            crate::caps::audit::silenced(limited).await
        } else {
            crate::caps::audit::budgeted(limited).await
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        let _entered = span.enter();
        if self.probe {
            tracing::debug!(outcome, "probe call done");
            return result;
        }
        crate::metrics::metrics().call_done(&self.name, function, outcome, started.elapsed());
        if audit_dropped > 0 {
            crate::caps::audit::dropped_events(&self.name, &self.module.info().sha256, function, audit_dropped);
        }
        match &result {
            Ok(_) => tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "call done"),
            Err(e) => tracing::info!(kind = e.kind.as_str(), error = %e.message, "call failed"),
        }
        result
    }

    async fn call_limited(&self, runtime: &super::Runtime, invocation: Invocation<'_>, turn: Turn) -> Result<Output, CallError> {
        let started = Instant::now();
        let limits = self.config.limits;
        let function = invocation.function();
        let metrics = crate::metrics::metrics();
        if let Some(rate) = &self.rate
            && !rate.try_take()
        {
            metrics.limited(&self.name, "rate");
            return Err(CallError::new(
                ErrorKind::Limit,
                format!(
                    "returner `{}` is over its rate limit of {} calls/s (burst {})",
                    self.name, rate.per_second, rate.burst
                ),
            ));
        }
        let Ok(slot) = tokio::time::timeout(limits.deadline, self.slots.acquire()).await else {
            metrics.limited(&self.name, "concurrency");
            return Err(CallError::new(
                ErrorKind::Limit,
                format!(
                    "returner `{}` is at its max_concurrency of {} and no slot freed within its {} ms deadline",
                    self.name,
                    limits.max_concurrency,
                    limits.deadline.as_millis()
                ),
            ));
        };
        let _slot = slot.map_err(|_| CallError::new(ErrorKind::Internal, "concurrency limiter closed"))?;
        metrics.in_flight(&self.name, 1);
        let _in_flight = InFlight(&self.name);

        let deadline = started + limits.deadline;
        let mut store = self.new_store(runtime, deadline, turn.clone()).map_err(|e| {
            CallError::new(ErrorKind::Internal, format!("preparing a call of `{}`: {e:#}", self.name))
        })?;
        time_slice(&mut store, deadline, turn.clone());

        let outcome = until_deadline(deadline, &turn, self.run(&mut store, invocation)).await;
        match outcome {
            None => Err(self.fault(function, self.deadline_error(function))),
            Some(Ok(Ok(output))) => self.check_result_size(function, output),
            Some(Ok(Err(guest_error))) => Err(guest_failed(&self.name, function, &store, guest_error)),
            Some(Err(fault)) => {
                if let Some(full) = fault.downcast_ref::<PoolConcurrencyLimitError>() {
                    return Err(self.pool_full(runtime, function, full));
                }
                let e = self.fault_error(function, &store, fault).by_the_guest();
                Err(self.fault(function, e))
            }
        }
    }

    /// The shared pool had no slot for this call's instance. Not this
    /// guest's fault, and not audited as one: the slots are taken by calls
    /// in flight, of any returner.
    fn pool_full(&self, runtime: &super::Runtime, function: &str, full: &PoolConcurrencyLimitError) -> CallError {
        crate::metrics::metrics().limited(&self.name, "pool");
        CallError::new(
            ErrorKind::Limit,
            format!(
                "no free instance slot in the host's pool for a call of `{}`'s {function} ({full}; \
                 server.instance_slots = {} is shared by the calls in flight of every returner); retry later",
                self.name,
                runtime.instance_slots()
            ),
        )
    }

    /// Audit a guest fault and hand its error back.
    fn fault(&self, function: &str, e: CallError) -> CallError {
        if self.probe {
            return e;
        }
        crate::caps::audit::fault(&self.name, &self.module.info().sha256, function, e.kind.as_str(), &e.message);
        e
    }

    /// A result over `limits.max_result_mib` is refused (and audited as a
    /// fault of kind `limit`): the host would otherwise parse and send it on.
    fn check_result_size(&self, function: &str, output: Output) -> Result<Output, CallError> {
        let size = output.size();
        let max = self.config.limits.max_result_bytes;
        if size > max {
            return Err(self.fault(function, CallError::new(
                ErrorKind::Limit,
                format!(
                    "returner `{}` answered {function} with {size} bytes, over its max_result_mib of {} MiB",
                    self.name,
                    max / (1024 * 1024)
                ),
            )));
        }
        Ok(output)
    }

    fn new_store(&self, runtime: &super::Runtime, deadline: Instant, turn: Turn) -> anyhow::Result<Store<CallState>> {
        let mut wasi = WasiCtxBuilder::new();
        crate::caps::wasi::deny_network(&mut wasi);
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        wasi.stderr(stderr.clone());
        if let Some(fs) = &self.config.grants.fs {
            fs.preopen(&mut wasi)?;
        }
        let state = CallState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(&self.config.limits),
            caps: CallCaps::new(
                self.name.clone(),
                &self.config.grants,
                self.config.options.clone(),
                &self.backends,
                deadline,
                &self.resolved,
                turn,
            ),
            stderr,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        Ok(store)
    }

    async fn run(
        &self,
        store: &mut Store<CallState>,
        invocation: Invocation<'_>,
    ) -> wasmtime::Result<Result<Output, crate::bindings::GuestError>> {
        let call = match invocation {
            Invocation::Salt(call) => call,
            Invocation::Batch(rets) => return self.run_batch(store, rets).await,
        };
        let instance = self.module.pre.instantiate_async(&mut *store).await?;
        let r = instance.salt_returner_returner();
        let s = &mut *store;
        Ok(match call {
            Call::Returner(ret) => r.call_returner(s, ret).await?.map(|()| Output::Unit),
            Call::SaveLoad { jid, load, minions } => {
                r.call_save_load(s, jid, load, minions.as_deref()).await?.map(|()| Output::Unit)
            }
            Call::GetLoad { jid } => r.call_get_load(s, jid).await?.map(Output::Json),
            Call::GetJid { jid } => r.call_get_jid(s, jid).await?.map(Output::Json),
            Call::GetFun { fun } => r.call_get_fun(s, fun).await?.map(Output::Json),
            Call::GetJids => r.call_get_jids(s).await?.map(Output::Json),
            Call::GetJidsFilter { count, filter_find_job } => {
                r.call_get_jids_filter(s, *count, *filter_find_job).await?.map(Output::Json)
            }
            Call::GetMinions => r.call_get_minions(s).await?.map(Output::Strings),
            Call::PrepJid { nocache, passed_jid } => {
                r.call_prep_jid(s, *nocache, passed_jid.as_deref()).await?.map(Output::String)
            }
            Call::SaveMinions { jid, minions, syndic_id } => r
                .call_save_minions(s, jid, minions, syndic_id.as_deref())
                .await?
                .map(|()| Output::Unit),
            Call::CleanOldJobs => r.call_clean_old_jobs(s).await?.map(|()| Output::Unit),
            Call::EventReturn { events } => r.call_event_return(s, events).await?.map(|()| Output::Unit),
            Call::UpdateEndtime { jid, time } => {
                r.call_update_endtime(s, jid, time).await?.map(|()| Output::Unit)
            }
            Call::GetEndtime { jid } => r.call_get_endtime(s, jid).await?.map(Output::OptionalString),
        })
    }

    /// The batch export is not in the world the bindings were generated
    /// for (a module may lack it), so it is called through the index found,
    /// and type-checked, when the module was loaded.
    async fn run_batch(
        &self,
        store: &mut Store<CallState>,
        rets: &[JobReturn],
    ) -> wasmtime::Result<Result<Output, crate::bindings::GuestError>> {
        let Some(index) = &self.module.batch else {
            wasmtime::bail!("the module has no {BATCH_INTERFACE} export");
        };
        let instance = self.module.pre.instance_pre().instantiate_async(&mut *store).await?;
        let func = instance.get_typed_func::<BatchParams<'_>, BatchResults>(&mut *store, index)?;
        let (result,) = func.call_async(&mut *store, (rets,)).await?;
        Ok(result.map(|()| Output::Unit))
    }

    fn deadline_error(&self, function: &str) -> CallError {
        // Also reached from the tokio timeout, when time ran out in a host call.
        CallError::new(
            ErrorKind::Deadline,
            format!(
                "returner `{}` ran past its deadline of {} ms in {function}",
                self.name,
                self.config.limits.deadline.as_millis()
            ),
        )
    }

    /// The guest trapped, or the host could not run it: say which.
    fn fault_error(&self, function: &str, store: &Store<CallState>, fault: wasmtime::Error) -> CallError {
        let name = &self.name;
        if store.data().limiter.table_hit {
            return CallError::new(
                ErrorKind::Limit,
                format!(
                    "returner `{name}` grew a table past its table_elements limit of {} in {function}",
                    self.config.limits.table_elements
                ),
            );
        }
        if store.data().limiter.memory_hit {
            return CallError::new(
                ErrorKind::MemoryLimit,
                format!(
                    "returner `{name}` hit its memory cap of {} MiB in {function}",
                    self.config.limits.memory_bytes / (1024 * 1024)
                ),
            );
        }
        match fault.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.deadline_error(function),
            Some(trap) => {
                let stderr = store.data().stderr.contents();
                let said = stderr_summary(&stderr);
                let said = if said.is_empty() { String::new() } else { format!("; it said: {said}") };
                CallError::new(ErrorKind::Trap, format!("returner `{name}` trapped in {function}: {trap}{said}"))
            }
            None => CallError::new(ErrorKind::Trap, format!("returner `{name}` failed in {function}: {fault:#}")),
        }
    }
}

/// The guest's own error answer, and the fs quota's refusal when one came
/// in the call: the guest saw only `insufficient-space`, and what it says
/// ("No space left on device") sends an admin to look at the wrong disk.
fn guest_failed(returner: &str, function: &str, store: &Store<CallState>, e: crate::bindings::GuestError) -> CallError {
    let mut e = CallError::from_guest(returner, function, e);
    if let Some(refusal) = store.data().caps.fs().quota_refusal() {
        e.message = format!("{} (in this call, {refusal})", e.message);
    }
    e
}

/// Start the `ok` series of [`RETURNER_BATCH`] at 0 for a module that
/// exports batch, beside those of Salt's functions (declared by whoever
/// loads the returner), so a `rate()` over it has a series before the first
/// batch.
fn declare_batch_metrics(returner: &str, module: &Module) {
    if module.supports_batch() {
        crate::metrics::metrics().declare_returner(returner, &[RETURNER_BATCH]);
    }
}

/// Keeps the in-flight gauge right however a call ends.
struct InFlight<'a>(&'a str);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        crate::metrics::metrics().in_flight(self.0, -1);
    }
}

/// A token bucket: `per_second` calls on average, `burst` at once.
struct RateLimiter {
    per_second: f64,
    burst: u32,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst, state: Mutex::new((f64::from(burst), Instant::now())) }
    }

    fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(f64::from(self.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long after its deadline a call waiting in a host function is ended
/// by the runtime's timeout; see `call_limited`.
const HOST_WAIT_GRACE: std::time::Duration = std::time::Duration::from_millis(25);

/// Guest code runs for at most this many epoch ticks before it yields to
/// the async executor, so a guest that computes cannot hold a worker thread
/// (and starve the calls of other returners) until its deadline.
const SLICE_TICKS: u64 = 2;

/// `run`'s outcome, or `None` once the call's `deadline` (moved on by its
/// waits for `turn`) has passed. The end comes a little after the deadline,
/// so a guest still computing then is interrupted by the epoch (its own
/// fault); this ends a call waiting in a host function.
async fn until_deadline<T>(deadline: Instant, turn: &Turn, run: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::pin!(run);
    loop {
        let end = turn.extended(deadline) + HOST_WAIT_GRACE;
        if Instant::now() >= end {
            return None;
        }
        tokio::select! {
            out = &mut run => return Some(out),
            _ = tokio::time::sleep_until(end.into()) => {}
        }
    }
}

/// Run the guest in time slices: at the end of each it yields to the
/// executor; past `deadline` it traps with `Trap::Interrupt`. (Time spent in
/// host calls is bounded by the caller's timeout.)
fn time_slice(store: &mut Store<CallState>, deadline: Instant, turn: Turn) {
    store.set_epoch_deadline(SLICE_TICKS);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= turn.extended(deadline) {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::YieldCustom(SLICE_TICKS, Box::pin(tokio::task::yield_now())))
    });
}

/// What the guest wrote to stderr (a panic message, typically), on one line,
/// cut to a sane length, without Rust's backtrace hint.
fn stderr_summary(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    lines.join(" / ").chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limiter_allows_the_burst_then_refills() {
        let r = RateLimiter::new(1000.0, 3);
        assert!(r.try_take() && r.try_take() && r.try_take());
        assert!(!r.try_take(), "the burst is spent");
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.try_take(), "tokens refill at the rate");
    }

    #[test]
    fn stderr_summary_keeps_the_panic_message() {
        let err = b"\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable\n";
        assert_eq!(stderr_summary(err), "thread '<unnamed>' panicked at src/lib.rs:3:5: / boom");
        assert_eq!(stderr_summary(b""), "");
    }
}
