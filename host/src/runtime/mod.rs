//! The wasmtime side: one engine (component model, async, pooling allocator,
//! epoch interruption), modules compiled once and cached on disk, and calls
//! that each run in a fresh store with a memory cap, a deadline and a
//! per-returner concurrency limit. Names no backend: capabilities are linked
//! through `caps`.

mod call;
mod module;
mod seal;

pub use call::{Call, Output, RETURNER_BATCH, Returner};
pub use module::{FUNCTIONS, Module, ModuleInfo, sha256_hex};

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::ReturnerComponentPre;
use crate::caps::{self, CallCaps, CapsView};

/// Async worker threads per core. Guest code that computes occupies a
/// worker for its time slice; with several workers per core a call of a
/// well-behaved returner still finds a free worker at once while guests of
/// other returners compute, and the kernel shares the cores among them.
pub const WORKERS_PER_CORE: usize = 4;

/// Worker threads for the host's async runtime.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * WORKERS_PER_CORE
}

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of a guest's stderr kept per call, to quote a panic message in the
/// error; more is dropped so a guest cannot fill host memory through it.
pub const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Sizing of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where compiled modules are kept between runs; `None` compiles in memory only.
    pub compiled_dir: Option<PathBuf>,
    /// Component instances that may exist at once (calls in flight, all returners).
    pub instance_slots: u32,
    /// The largest memory cap of any returner, in bytes.
    pub max_memory_bytes: usize,
    /// The largest `limits.instances` of any returner: core instances one
    /// component instance may hold in the pool.
    pub instances_per_component: u32,
    /// The largest `limits.memories` of any returner: linear memories one
    /// component instance may hold in the pool.
    pub memories_per_component: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            compiled_dir: None,
            instance_slots: 64,
            max_memory_bytes: (crate::config::DEFAULT_MEMORY_MIB * 1024 * 1024) as usize,
            instances_per_component: crate::config::DEFAULT_INSTANCES,
            memories_per_component: crate::config::DEFAULT_MEMORIES,
        }
    }
}

impl RuntimeOptions {
    /// Options whose per-component limits fit every returner of `returners`
    /// (the largest of each limit), with `instance_slots` slots.
    pub fn for_returners<'a>(
        instance_slots: u32,
        returners: impl IntoIterator<Item = &'a crate::config::Limits>,
    ) -> Self {
        let mut opts = Self { instance_slots, ..Self::default() };
        for limits in returners {
            opts.max_memory_bytes = opts.max_memory_bytes.max(limits.memory_bytes);
            opts.instances_per_component = opts.instances_per_component.max(limits.instances);
            opts.memories_per_component = opts.memories_per_component.max(limits.memories);
        }
        opts
    }
}

/// The engine, the linker with every capability, and the compiled-module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    instance_slots: u32,
    compiled_dir: Option<PathBuf>,
    engine_hash: String,
    ticker: Arc<AtomicBool>,
    pagemap_scan: bool,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine and linker, and start the epoch ticker.
    pub fn new(opts: RuntimeOptions) -> anyhow::Result<Self> {
        let (engine, pagemap_scan) = match build_engine(&opts, true) {
            Ok(engine) => (engine, true),
            // No PAGEMAP_SCAN (Linux before 6.7): reset memories with madvise.
            Err(_) => (build_engine(&opts, false)?, false),
        };
        tracing::debug!(pagemap_scan, "engine ready");

        let mut linker = Linker::new(&engine);
        caps::wasi::add_to_linker(&mut linker).map_err(anyhow::Error::from).context("linking WASI")?;
        caps::add_to_linker(&mut linker).map_err(anyhow::Error::from).context("linking the returner capabilities")?;

        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());

        let ticker = Arc::new(AtomicBool::new(false));
        let (stop, e) = (ticker.clone(), engine.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    e.increment_epoch();
                }
            })
            .context("starting the epoch ticker")?;

        if let Some(dir) = &opts.compiled_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let instance_slots = pool_slots(&opts);
        Ok(Self { engine, linker, instance_slots, compiled_dir: opts.compiled_dir, engine_hash, ticker, pagemap_scan })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Component instances the pool holds at once: calls in flight, all
    /// returners together.
    pub fn instance_slots(&self) -> u32 {
        self.instance_slots
    }

    /// Whether instance slots are reset by scanning for dirtied pages
    /// (PAGEMAP_SCAN, Linux 6.7+) rather than with `madvise`.
    pub fn resets_with_pagemap_scan(&self) -> bool {
        self.pagemap_scan
    }
}

/// Resident bytes a returned instance slot may keep, per linear memory and
/// per table, when the kernel can tell which pages a call dirtied
/// (PAGEMAP_SCAN): those pages are reset with `memset` instead of `madvise`,
/// which on a multi-threaded host costs a TLB shootdown on every core per
/// call. A no-op call dirties a few pages; a busy one more, and past this
/// the rest is released as before.
const KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;

/// Tables one component instance may define. A Rust guest defines two or
/// three (its module's and wit-component's shims'), one linked from several
/// libraries a few more; many more is a component built to take the pool's
/// tables from other returners.
const TABLES_PER_COMPONENT: u32 = 64;

fn pool_slots(opts: &RuntimeOptions) -> u32 {
    opts.instance_slots.max(1)
}

fn build_engine(opts: &RuntimeOptions, pagemap_scan: bool) -> anyhow::Result<Engine> {
    let slots = pool_slots(opts);
    let (instances, memories) = (opts.instances_per_component.max(1), opts.memories_per_component.max(1));
    let mut pool = PoolingAllocationConfig::new();
    // Each slot has room for the most one component instance may take, and
    // no component instance may take more: one returner's calls cannot
    // starve another's of core instances, memories or tables, only of
    // slots, which `max_concurrency` shares out.
    pool.total_component_instances(slots)
        .max_core_instances_per_component(instances)
        .max_memories_per_component(memories)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_core_instances(slots.saturating_mul(instances))
        .total_memories(slots.saturating_mul(memories))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .max_memory_size(opts.max_memory_bytes);
    if pagemap_scan {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
    }
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
        // Names the guests' compiled functions for `perf report`, in
        // /tmp/perf-<pid>.map.
        config.profiler(ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasmtime engine")
}

/// Set to `1`, the engine writes a perf map of the guests' code, so `perf`
/// names the functions a profile of the host spends its time in.
pub const PERFMAP_ENV: &str = "RETURNER_HOST_PERFMAP";

/// Everything a store holds for one call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    caps: CallCaps,
    stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl CapsView for CallState {
    fn caps(&mut self) -> &mut CallCaps {
        &mut self.caps
    }
}

impl caps::fs::QuotaFsView for CallState {
    fn quota_fs(&mut self) -> caps::fs::QuotaFs<'_> {
        let fs = WasiFilesystemCtxView { ctx: self.wasi.filesystem(), table: &mut self.table };
        caps::fs::QuotaFs::new(fs, self.caps.fs())
    }
}

/// Enforces a returner's memory, table and instance limits, and remembers
/// which one refused, so the error can name it rather than the guest's own
/// abort.
struct MemoryLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    memories: usize,
    memory_hit: bool,
    table_hit: bool,
}

impl MemoryLimiter {
    fn new(limits: &crate::config::Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements as usize,
            instances: limits.instances as usize,
            memories: limits.memories as usize,
            memory_hit: false,
            table_hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.table_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
