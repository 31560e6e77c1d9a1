//! The host config: TOML in the shape of DESIGN.md, parsed strictly
//! (`deny_unknown_fields`), then validated into resolved types. Every error
//! names the file, the key and what was expected.
//!
//! ```toml
//! [server]
//! listen = "unix:/run/returner-host/sock"   # or "tcp:127.0.0.1:4510" (then token_file is required)
//! token_file = "/etc/returner-host/token"
//! data_dir = "/var/lib/returner-host"
//!
//! [returners.local_cache]
//! module = "builtin:local-cache"
//! options = { keep_jobs_seconds = 86400 }
//! limits = { memory_mib = 64, deadline_ms = 2000, max_concurrency = 16 }
//! [returners.local_cache.grants.fs]
//! dir = "/var/cache/salt/jobs"
//! mode = "rw"
//! ```
//!
//! Relative paths in a config file are relative to the file's directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use crate::caps::Profile;
use crate::caps::Grants;

/// Default data directory when neither the config nor the command line names one.
pub const DEFAULT_DATA_DIR: &str = "./var";
/// Name of the unix socket inside the data dir when `listen` is not set.
pub const DEFAULT_SOCKET_NAME: &str = "returner-host.sock";
/// Name the embedded default returner is served under.
pub const DEFAULT_RETURNER: &str = "local_cache";
/// Module reference of the embedded local-cache returner.
pub const BUILTIN_LOCAL_CACHE: &str = "builtin:local-cache";

/// A returner's memory cap when the config does not set one. Stops a guest
/// from exhausting the host's memory.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// A call's time limit when the config does not set one. Stops a looping
/// guest from holding a worker and a concurrency slot forever.
pub const DEFAULT_DEADLINE_MS: u64 = 2_000;
/// Calls of one returner running at once when the config does not set it.
/// Stops one busy or slow returner from taking every instance slot.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;
/// Largest request body the ingest API reads when the config does not set
/// it. Large state runs fit; a runaway client cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Table elements a call's instance may grow its tables to. Rust guests use
/// a few hundred; more is growth for its own sake.
pub const DEFAULT_TABLE_ELEMENTS: u32 = 20_000;
/// Core instances a call may create. A component built by wasm32-wasip2 makes
/// a handful (the module and wit-component's shims); more is instantiation
/// for its own sake.
pub const DEFAULT_INSTANCES: u32 = 64;
/// Linear memories a call's component may define. A Rust, Python or
/// JavaScript guest defines one; more is a component built to take the
/// pool's memory slots from other returners.
pub const DEFAULT_MEMORIES: u32 = 2;
/// Most `limits.memories`: the pool reserves address space for that many
/// memories per instance slot.
pub const MAX_MEMORIES: u32 = 16;
/// Most `server.instance_slots`: each slot reserves address space for the
/// largest memory cap, so a typo must not reserve terabytes.
pub const MAX_INSTANCE_SLOTS: u32 = 4096;
/// Largest answer a returner may give (JSON text), when the config does not
/// set it. Stops a guest from making the host parse and send a huge result.
pub const DEFAULT_MAX_RESULT_MIB: u64 = 16;
/// How often `serve` checks the returners' module files for a change, when
/// the config does not set it. A `stat` per module file; a replaced module is
/// live within two intervals.
pub const DEFAULT_WATCH_INTERVAL_MS: u64 = 1_000;

/// The longest `deadline_ms`. A call holds a concurrency slot and an
/// instance for its whole deadline; past ten minutes a call is stuck, not
/// slow, and a typo (`deadline_ms = 20000000`) would let one hold them for days.
pub const MAX_DEADLINE_MS: u64 = 600_000;
/// The largest `memory_mib`: all a 32-bit guest can address. More would
/// only size the instance pool's reservations for nothing.
pub const MAX_MEMORY_MIB: u64 = 4_096;
/// The largest `max_concurrency`. Instance slots are the sum over the
/// returners; one returner asking for more would size the pool (and its
/// address-space reservation) past what a host can hold.
pub const MAX_CONCURRENCY: u32 = 1_024;
/// The largest `table_elements`. Stops a config from letting a guest grow
/// its tables into gigabytes of host memory.
pub const MAX_TABLE_ELEMENTS: u32 = 1_000_000;
/// The largest `instances`. Stops a config from letting one call create core
/// instances without end; the largest value also sizes each of the pool's
/// slots, so it bounds the memory the pool reserves.
pub const MAX_INSTANCES: u32 = 1_024;
/// The largest `max_result_mib`: an answer the host holds, parses and sends
/// whole must stay well inside its memory.
pub const MAX_RESULT_MIB: u64 = 4_096;
/// The largest `rate_per_second` and `burst`: beyond, the token bucket
/// limits nothing and a typo would pass unseen.
pub const MAX_RATE: u32 = 1_000_000;
/// The largest `server.max_body_bytes`: a request body is held in memory
/// whole, so no setting may let a runaway client send more than this.
pub const MAX_BODY_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
/// The shortest non-zero `server.watch_interval_ms`: shorter turns the
/// watch of module files into a busy loop of `stat` calls.
pub const MIN_WATCH_INTERVAL_MS: u64 = 10;
/// The longest `server.watch_interval_ms` (a day); to stop watching, use 0.
pub const MAX_WATCH_INTERVAL_MS: u64 = 86_400_000;

/// Where, under `server.data_dir`, the host keeps its compiled modules.
pub const COMPILED_DIR: &str = "compiled";
/// Where, under `server.data_dir`, the host keeps (and will keep) its spool.
pub const SPOOL_DIR: &str = "spool";
/// The parts of `server.data_dir` that are the host's own. No `fs` grant may
/// reach them, nor hold them: a guest that could write the compiled modules
/// would have the host run its native code, and one that could write the
/// spool would forge what was acknowledged. The rest of the data dir (the
/// default job cache in `jobs`) may be granted.
pub const HOST_OWNED_DIRS: &[&str] = &[COMPILED_DIR, SPOOL_DIR];

/// Create `dir` and its missing parents for the host's user only (0700),
/// whatever the umask: the data dir holds compiled code and the socket, and
/// under a umask of 000 anyone could have written them. Directories that
/// exist keep their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A config that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// Config file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key has a value of the wrong shape, is unknown, or is missing.
    #[error("{file}: {}{message}", key_prefix(key))]
    Invalid {
        /// Config file, or `<command line>` / `<default>`.
        file: PathBuf,
        /// Dotted key path, e.g. `returners.etcd.limits.memory_mib`; empty for the whole file.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!("key `{key}`: ") }
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    returners: BTreeMap<String, ReturnerSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    token_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    audit_log: Option<PathBuf>,
    watch_interval_ms: Option<u64>,
    instance_slots: Option<u32>,
    #[serde(default)]
    spool: SpoolSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolSection {
    max_bytes: Option<u64>,
    fsync: Option<bool>,
    drain_timeout_ms: Option<u64>,
    batch_max_items: Option<u64>,
    batch_max_bytes: Option<u64>,
    retry_max_ms: Option<u64>,
    reserve_bytes: Option<u64>,
}

/// The spool's settings (`[server.spool]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Bytes the spool holds at most, queued and dead together; a write
    /// past it is refused with `spool_full` (507).
    pub max_bytes: u64,
    /// Whether each commit is on disk before writes are acknowledged. Off
    /// is faster and loses the last moments' writes on a power loss (not on
    /// a crash of the host alone).
    pub fsync: bool,
    /// How long a SIGTERM keeps delivering before the host exits.
    pub drain_timeout: Duration,
    /// Writes delivered in one guest call at most.
    pub batch_max_items: usize,
    /// Bytes of writes delivered in one guest call at most (one larger
    /// write still goes, alone).
    pub batch_max_bytes: usize,
    /// The longest wait between retries of a failing delivery.
    pub retry_max: Duration,
    /// Bytes of the spool's disk kept in a reserve file, given up when the
    /// disk is full so that delivery can still record what it delivered
    /// (the store needs new pages for that too), taken back once there is
    /// room; 0 keeps none.
    pub reserve_bytes: u64,
}

/// `server.spool.max_bytes` when the config does not set it: 4 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 4 << 30;

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            fsync: true,
            drain_timeout: Duration::from_secs(10),
            batch_max_items: 256,
            batch_max_bytes: 4 << 20,
            retry_max: Duration::from_secs(5),
            reserve_bytes: 16 << 20,
        }
    }
}

fn resolve_spool(s: &SpoolSection) -> Result<SpoolConfig, (&'static str, String)> {
    let d = SpoolConfig::default();
    Ok(SpoolConfig {
        max_bytes: in_range("max_bytes", s.max_bytes, 1 << 20, 1 << 50, "bytes")?.unwrap_or(d.max_bytes),
        fsync: s.fsync.unwrap_or(d.fsync),
        drain_timeout: in_range("drain_timeout_ms", s.drain_timeout_ms, 0, 3_600_000, "ms")?
            .map_or(d.drain_timeout, Duration::from_millis),
        batch_max_items: in_range("batch_max_items", s.batch_max_items, 1, 10_000, "writes")?
            .map_or(d.batch_max_items, |n| n as usize),
        batch_max_bytes: in_range("batch_max_bytes", s.batch_max_bytes, 1024, 256 << 20, "bytes")?
            .map_or(d.batch_max_bytes, |n| n as usize),
        retry_max: in_range("retry_max_ms", s.retry_max_ms, 100, 600_000, "ms")?
            .map_or(d.retry_max, Duration::from_millis),
        reserve_bytes: in_range("reserve_bytes", s.reserve_bytes, 0, 1 << 40, "bytes")?.unwrap_or(d.reserve_bytes),
    })
}


#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnerSection {
    #[serde(default)]
    module: Option<String>,
    #[serde(default)]
    fan_out: Option<Vec<String>>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    options: toml::Table,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    grants: Grants,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    memory_mib: Option<u64>,
    deadline_ms: Option<u64>,
    max_concurrency: Option<u32>,
    table_elements: Option<u32>,
    instances: Option<u32>,
    memories: Option<u32>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
    max_result_mib: Option<u64>,
}

/// Where the host listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path (created with mode 0600).
    Unix(PathBuf),
    /// Loopback TCP; requires a bearer token.
    Tcp(SocketAddr),
}

impl Listen {
    /// Parse `unix:PATH` or `tcp:ADDR:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. `unix:/run/returner-host/sock`".into());
            }
            Ok(Listen::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse::<SocketAddr>()
                .map(Listen::Tcp)
                .map_err(|e| format!("`{addr}` is not an address:port ({e}), e.g. `tcp:127.0.0.1:4510`"))
        } else {
            Err(format!("`{s}` should be `unix:PATH` or `tcp:127.0.0.1:PORT`"))
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Resolved server settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: Listen,
    /// File holding the bearer token; required for TCP.
    pub token_file: Option<PathBuf>,
    /// Where the host keeps its own state (compiled modules, the default cache).
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// File the audit events are appended to as JSON lines, if any.
    pub audit_log: Option<PathBuf>,
    /// How often `serve` looks at the returners' module files for a new
    /// version to load; `None` when watching is off (`watch_interval_ms = 0`).
    pub watch_interval: Option<Duration>,
    /// Component instances the pool holds at once, when the config sets it;
    /// otherwise the sum of the returners' `max_concurrency` and a spare few.
    pub instance_slots: Option<u32>,
    /// The spool's settings.
    pub spool: SpoolConfig,
}

impl ServerConfig {
    /// Where compiled modules are cached (host-owned: no grant reaches it).
    pub fn compiled_dir(&self) -> PathBuf {
        self.data_dir.join(COMPILED_DIR)
    }

    /// Where the spool lives (host-owned: no grant reaches it).
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join(SPOOL_DIR)
    }
}

/// Where a returner's code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    /// A `.wasm` component on disk.
    File(PathBuf),
    /// A component embedded in the host binary, by name (`local-cache`).
    Builtin(String),
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleSource::File(p) => write!(f, "{}", p.display()),
            ModuleSource::Builtin(name) => write!(f, "builtin:{name}"),
        }
    }
}

/// Resource limits of one returner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Linear memory cap of one call's instance, in bytes.
    pub memory_bytes: usize,
    /// Time limit of one call, guest CPU and host waits together.
    pub deadline: Duration,
    /// Calls running at once; more wait for a slot until their deadline.
    pub max_concurrency: u32,
    /// Elements a call's tables may grow to.
    pub table_elements: u32,
    /// Core instances a call may create.
    pub instances: u32,
    /// Linear memories a call's component may define.
    pub memories: u32,
    /// Calls per second, if limited.
    pub rate: Option<Rate>,
    /// Largest answer, in bytes.
    pub max_result_bytes: usize,
}

/// A call rate limit: a token bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Calls per second on average.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: (DEFAULT_MEMORY_MIB * 1024 * 1024) as usize,
            deadline: Duration::from_millis(DEFAULT_DEADLINE_MS),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            instances: DEFAULT_INSTANCES,
            memories: DEFAULT_MEMORIES,
            rate: None,
            max_result_bytes: (DEFAULT_MAX_RESULT_MIB * 1024 * 1024) as usize,
        }
    }
}

/// One resolved returner.
#[derive(Clone, Debug)]
pub struct ReturnerConfig {
    /// The name Salt calls it by (the URL's `{name}`).
    pub name: String,
    /// Its component.
    pub module: ModuleSource,
    /// Non-secret options, handed to the guest through `config`.
    pub options: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Its limits.
    pub limits: Limits,
    /// What it may reach.
    pub grants: Grants,
    /// The module's sha256 the admin pinned, lowercase hex; any other is refused.
    pub sha256: Option<String>,
}

/// A validated host config.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where it came from (a file, or `<default>`).
    pub source: PathBuf,
    /// Server settings.
    pub server: ServerConfig,
    /// Connection profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Returners, by name.
    pub returners: Vec<ReturnerConfig>,
    /// Salt names whose writes go to several returners (`fan_out = [...]`,
    /// Salt's multi_returner): the name and its targets, in order.
    pub fan_out: BTreeMap<String, Vec<String>>,
}

/// Command-line settings that override the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--token-file`
    pub token_file: Option<PathBuf>,
}

impl HostConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base, overrides)
    }

    /// Parse and validate config text; `base` resolves relative paths.
    pub fn parse(text: &str, source: &Path, base: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: source.to_path_buf(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| invalid(String::new(), toml_message(text, &e)))?;
        let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            invalid(key, toml_message(text, e.inner()))
        })?;
        resolve(file, source, base, overrides)
    }

    /// The embedded default: the local-cache returner as `local_cache`, its
    /// job cache in `<data_dir>/jobs`, listening on a unix socket in the data dir.
    pub fn embedded_default(overrides: &Overrides) -> Result<Self, ConfigError> {
        let data_dir = overrides.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let jobs = data_dir.join("jobs");
        create_private_dir(&jobs).map_err(|e| ConfigError::Invalid {
            file: PathBuf::from("<default>"),
            key: "server.data_dir".into(),
            message: format!("cannot create {}: {e}", jobs.display()),
        })?;
        let text = format!(
            "[returners.{DEFAULT_RETURNER}]\nmodule = \"{BUILTIN_LOCAL_CACHE}\"\n\
             [returners.{DEFAULT_RETURNER}.grants.fs]\ndir = {}\nmode = \"rw\"\n",
            toml_string(&jobs.to_string_lossy())
        );
        let overrides = Overrides { data_dir: Some(data_dir), ..overrides.clone() };
        Self::parse(&text, Path::new("<default>"), Path::new(""), &overrides)
    }

    /// The returner called `name`.
    pub fn returner(&self, name: &str) -> Option<&ReturnerConfig> {
        self.returners.iter().find(|r| r.name == name)
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// toml's message with the line and column of its span.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().to_owned();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

fn resolve(file: ConfigFile, source: &Path, base: &Path, overrides: &Overrides) -> Result<HostConfig, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: source.to_path_buf(),
        key: key.to_owned(),
        message,
    };
    let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };

    let data_dir = match (&overrides.data_dir, &file.server.data_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => abs(d),
        (None, None) => PathBuf::from(DEFAULT_DATA_DIR),
    };
    let listen = match (&overrides.listen, &file.server.listen) {
        (Some(l), _) => Listen::parse(l).map_err(|m| ConfigError::Invalid {
            file: PathBuf::from("<command line>"),
            key: "--listen".into(),
            message: m,
        })?,
        (None, Some(l)) => Listen::parse(l).map_err(|m| invalid("server.listen", m))?,
        (None, None) => Listen::Unix(data_dir.join(DEFAULT_SOCKET_NAME)),
    };
    let token_file = match (&overrides.token_file, &file.server.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(t)) => Some(abs(t)),
        (None, None) => None,
    };
    if let Listen::Tcp(addr) = &listen
        && token_file.is_none()
    {
        return Err(invalid(
            "server.token_file",
            format!("listening on tcp:{addr} requires a bearer token: set server.token_file or pass --token-file"),
        ));
    }
    let max_body_bytes = file.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let audit_log = file.server.audit_log.as_deref().map(abs);
    if !(1..=MAX_BODY_BYTES_LIMIT).contains(&max_body_bytes) {
        return Err(invalid(
            "server.max_body_bytes",
            format!("{max_body_bytes} is out of range; expected 1 to {MAX_BODY_BYTES_LIMIT} bytes"),
        ));
    }
    let watch_interval = match file.server.watch_interval_ms.unwrap_or(DEFAULT_WATCH_INTERVAL_MS) {
        0 => None,
        ms if (MIN_WATCH_INTERVAL_MS..=MAX_WATCH_INTERVAL_MS).contains(&ms) => Some(Duration::from_millis(ms)),
        ms => {
            return Err(invalid(
                "server.watch_interval_ms",
                format!("{ms} is out of range; expected 0 (no watch) or {MIN_WATCH_INTERVAL_MS} to {MAX_WATCH_INTERVAL_MS} ms"),
            ));
        }
    };
    let instance_slots = in_range("instance_slots", file.server.instance_slots, 1, MAX_INSTANCE_SLOTS, "slots")
        .map_err(|(k, m)| invalid(&format!("server.{k}"), m))?;
    let spool = resolve_spool(&file.server.spool).map_err(|(k, m)| invalid(&format!("server.spool.{k}"), m))?;
    let host_owned: Vec<PathBuf> = HOST_OWNED_DIRS.iter().map(|d| resolve_symlinks(&data_dir.join(d))).collect();

    let mut profiles = BTreeMap::new();
    for (name, mut profile) in file.profiles {
        let key = format!("profiles.{name}");
        match &mut profile {
            Profile::Etcd(p) => {
                p.validate().map_err(|(k, m)| invalid(&format!("{key}.{k}"), m))?;
                for file in [&mut p.password_file, &mut p.ca_file, &mut p.cert_file, &mut p.key_file] {
                    *file = file.as_deref().map(abs);
                }
            }
            Profile::Mysql(p) => {
                p.resolve_paths(abs);
                p.validate().map_err(|(k, m)| invalid(&format!("{key}.{k}"), m))?;
            }
            Profile::Http(p) => {
                p.resolve_paths(abs);
                p.validate().map_err(|(k, m)| invalid(&format!("{key}.{k}"), m))?;
            }
        }
        profiles.insert(name, profile);
    }

    let mut returners = Vec::new();
    let mut fan_out = BTreeMap::new();
    for (name, section) in file.returners {
        let key = format!("returners.{name}");
        check_returner_name(&name).map_err(|m| invalid(&key, m))?;
        let module = match (section.module, section.fan_out) {
            (Some(_), Some(_)) => {
                return Err(invalid(&key, "has both `module` and `fan_out`; a returner runs a module, a fan-out name only forwards to returners".into()));
            }
            (None, None) => {
                return Err(invalid(&key, "needs `module` (a .wasm component or `builtin:local-cache`) or `fan_out` (a list of returners)".into()));
            }
            (None, Some(targets)) => {
                if section.sha256.is_some() || !section.options.is_empty() || section.limits != LimitsSection::default() || format!("{:?}", section.grants) != format!("{:?}", Grants::default()) {
                    return Err(invalid(&key, "a fan_out name takes no module settings (sha256, options, limits, grants): its returners have their own".into()));
                }
                fan_out.insert(name, targets);
                continue;
            }
            (Some(module), None) => module,
        };
        let module = match module.strip_prefix("builtin:") {
            Some("local-cache") => ModuleSource::Builtin("local-cache".into()),
            Some(other) => {
                return Err(invalid(
                    &format!("{key}.module"),
                    format!("unknown builtin module `{other}`; the builtin modules are: local-cache"),
                ));
            }
            None => {
                let path = abs(Path::new(&module));
                if !path.is_file() {
                    return Err(invalid(
                        &format!("{key}.module"),
                        format!("{} is not a file; expected a .wasm component or `builtin:local-cache`", path.display()),
                    ));
                }
                ModuleSource::File(path)
            }
        };
        let limits = resolve_limits(&section.limits).map_err(|(k, m)| invalid(&format!("{key}.limits.{k}"), m))?;
        let mut grants = section.grants;
        if let Some(g) = &mut grants.etcd {
            let key = format!("{key}.grants.etcd");
            for (field, profile) in [("profile", Some(&g.profile)), ("read_profile", g.read_profile.as_ref()), ("write_profile", g.write_profile.as_ref())] {
                if let Some(profile) = profile {
                    check_profile(&profiles, profile, "etcd").map_err(|m| invalid(&format!("{key}.{field}"), m))?;
                }
            }
            g.root = crate::caps::etcd::normalise_root(&g.root).map_err(|m| invalid(&format!("{key}.root"), m))?;
        }
        if let Some(g) = &grants.mysql {
            check_profile(&profiles, &g.profile, "mysql").map_err(|m| invalid(&format!("{key}.grants.mysql.profile"), m))?;
            if let Some(Profile::Mysql(profile)) = profiles.get(&g.profile) {
                g.validate(profile).map_err(|(k, m)| invalid(&format!("{key}.grants.mysql.{k}"), m))?;
            }
        }
        if let Some(g) = &grants.http {
            check_profile(&profiles, &g.profile, "http").map_err(|m| invalid(&format!("{key}.grants.http.profile"), m))?;
            g.validate().map_err(|(k, m)| invalid(&format!("{key}.grants.http.{k}"), m))?;
        }
        if let Some(g) = &mut grants.fs {
            g.validate().map_err(|(k, m)| invalid(&format!("{key}.grants.fs.{k}"), m))?;
            g.dir = abs(&g.dir);
            if !g.dir.is_dir() {
                return Err(invalid(
                    &format!("{key}.grants.fs.dir"),
                    format!("{} is not a directory; create it, then grant it", g.dir.display()),
                ));
            }
            check_not_host_owned(&g.dir, &data_dir, &host_owned).map_err(|m| invalid(&format!("{key}.grants.fs.dir"), m))?;
        }
        let options = serde_json::to_value(&section.options)
            .ok()
            .and_then(|v| match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            })
            .ok_or_else(|| invalid(&format!("{key}.options"), "expected a table of options".into()))?;
        let sha256 = match section.sha256 {
            None => None,
            Some(pin) => {
                let pin = pin.to_ascii_lowercase();
                if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(&format!("{key}.sha256"), format!("`{pin}` is not a sha256 (64 hex digits)")));
                }
                Some(pin)
            }
        };
        returners.push(ReturnerConfig { name, module, options: Arc::new(options), limits, grants, sha256 });
    }

    Ok(HostConfig {
        source: source.to_path_buf(),
        server: ServerConfig {
            listen,
            token_file,
            data_dir,
            max_body_bytes: max_body_bytes as usize,
            audit_log,
            watch_interval,
            instance_slots,
            spool,
        },
        profiles,
        fan_out: check_fan_out(fan_out, &returners).map_err(|(k, m)| invalid(&k, m))?,
        returners,
    })
}

/// Each fan-out name's targets: at least one, no repeats, each a returner
/// with a module (a fan-out of fan-outs would hide where writes go).
fn check_fan_out(
    fan_out: BTreeMap<String, Vec<String>>,
    returners: &[ReturnerConfig],
) -> Result<BTreeMap<String, Vec<String>>, (String, String)> {
    for (name, targets) in &fan_out {
        let key = format!("returners.{name}.fan_out");
        if targets.is_empty() {
            return Err((key, "is empty; name the returners every write goes to".into()));
        }
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].contains(t) {
                return Err((key, format!("names `{t}` twice")));
            }
            if fan_out.contains_key(t) {
                return Err((key, format!("names `{t}`, which is a fan_out name itself; name returners with a module")));
            }
            if !returners.iter().any(|r| r.name == *t) {
                let known: Vec<&str> = returners.iter().map(|r| r.name.as_str()).collect();
                return Err((key, format!("names `{t}`, which is not a returner of this config; it has: {}", known.join(", "))));
            }
        }
    }
    Ok(fan_out)
}

fn resolve_limits(s: &LimitsSection) -> Result<Limits, (&'static str, String)> {
    let d = Limits::default();
    let memory_bytes = match in_range("memory_mib", s.memory_mib, 1, MAX_MEMORY_MIB, "MiB")? {
        None => d.memory_bytes,
        Some(m) => (m * 1024 * 1024) as usize,
    };
    let deadline = match in_range("deadline_ms", s.deadline_ms, 1, MAX_DEADLINE_MS, "ms")? {
        None => d.deadline,
        Some(ms) => Duration::from_millis(ms),
    };
    let max_concurrency = in_range("max_concurrency", s.max_concurrency, 1, MAX_CONCURRENCY, "calls")?.unwrap_or(d.max_concurrency);
    let table_elements =
        in_range("table_elements", s.table_elements, 1, MAX_TABLE_ELEMENTS, "elements")?.unwrap_or(d.table_elements);
    let instances = in_range("instances", s.instances, 1, MAX_INSTANCES, "instances")?.unwrap_or(d.instances);
    let memories = in_range("memories", s.memories, 1, MAX_MEMORIES, "memories")?.unwrap_or(d.memories);
    let burst = in_range("burst", s.burst, 1, MAX_RATE, "calls")?;
    let rate = match (s.rate_per_second, burst) {
        (None, None) => None,
        (None, Some(_)) => return Err(("burst", "burst needs rate_per_second".into())),
        (Some(r), _) if !(r.is_finite() && r > 0.0 && r <= f64::from(MAX_RATE)) => {
            return Err((
                "rate_per_second",
                format!("{r} is out of range; expected a number of calls per second above 0, at most {MAX_RATE}"),
            ));
        }
        (Some(r), burst) => Some(Rate { per_second: r, burst: burst.unwrap_or_else(|| (r.ceil() as u32).max(1)) }),
    };
    let max_result_bytes = match in_range("max_result_mib", s.max_result_mib, 1, MAX_RESULT_MIB, "MiB")? {
        None => d.max_result_bytes,
        Some(m) => (m * 1024 * 1024) as usize,
    };
    Ok(Limits { memory_bytes, deadline, max_concurrency, table_elements, instances, memories, rate, max_result_bytes })
}

/// `value` if it is within `min..=max`; else the key and the accepted range.
fn in_range<T: PartialOrd + fmt::Display + Copy>(
    key: &'static str,
    value: Option<T>,
    min: T,
    max: T,
    unit: &str,
) -> Result<Option<T>, (&'static str, String)> {
    match value {
        Some(v) if v < min || v > max => Err((key, format!("{v} is out of range; expected {min} to {max} {unit}"))),
        v => Ok(v),
    }
}

/// `path` with its symlinks resolved, also when its last components do not
/// exist yet (a data dir made at first start): the nearest existing
/// ancestor is resolved and the rest joined on, `..` taken lexically (a
/// component that does not exist cannot be a symlink).
fn resolve_symlinks(path: &Path) -> PathBuf {
    let path = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let components: Vec<Component<'_>> = path.components().collect();
    for existing in (1..=components.len()).rev() {
        let Ok(mut resolved) = components[..existing].iter().collect::<PathBuf>().canonicalize() else { continue };
        for c in &components[existing..] {
            match c {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::CurDir => {}
                c => resolved.push(c),
            }
        }
        return resolved;
    }
    path
}

/// A grant of `dir` must neither reach nor hold a host-owned directory of
/// `data_dir` (`host_owned`, resolved), symlinks resolved on both sides.
fn check_not_host_owned(dir: &Path, data_dir: &Path, host_owned: &[PathBuf]) -> Result<(), String> {
    let granted = resolve_symlinks(dir);
    for owned in host_owned {
        if granted.starts_with(owned) || owned.starts_with(&granted) {
            let shown = if granted == dir { String::new() } else { format!(" (resolved: {})", granted.display()) };
            let how = if granted.starts_with(owned) { "is inside" } else { "holds" };
            return Err(format!(
                "{}{shown} {how} {}, which is the host's own (server.data_dir {} keeps compiled modules in `{COMPILED_DIR}` and the spool in `{SPOOL_DIR}`): \
                 a guest granted it could change the code the host runs; grant a directory outside them, e.g. {}",
                dir.display(),
                owned.display(),
                data_dir.display(),
                data_dir.join("jobs").display()
            ));
        }
    }
    Ok(())
}

fn check_profile(profiles: &BTreeMap<String, Profile>, name: &str, kind: &str) -> Result<(), String> {
    match profiles.get(name) {
        None => Err(format!("no profile `{name}`; define [profiles.{name}] with kind = \"{kind}\"")),
        Some(p) if p.kind() != kind => Err(format!("profile `{name}` is of kind `{}`, expected `{kind}`", p.kind())),
        Some(_) => Ok(()),
    }
}

/// Returner names appear in URLs and logs: keep them plain.
pub(crate) fn check_returner_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("returner name `{name}` must be 1 to 64 of ASCII letters, digits, `_` and `-`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_names_returners_with_a_module_and_nothing_else() {
        let with = |extra: &str| {
            parse(&format!("[returners.a]\nmodule = \"builtin:local-cache\"\n[returners.b]\nmodule = \"builtin:local-cache\"\n{extra}"))
        };
        let cfg = with("[returners.all]\nfan_out = [\"b\", \"a\"]\n").unwrap();
        assert_eq!(cfg.fan_out["all"], ["b", "a"]);
        assert_eq!(cfg.returners.len(), 2);
        for (extra, says) in [
            ("[returners.all]\nfan_out = []\n", "is empty"),
            ("[returners.all]\nfan_out = [\"a\", \"a\"]\n", "names `a` twice"),
            ("[returners.all]\nfan_out = [\"c\"]\n", "not a returner of this config"),
            ("[returners.all]\nfan_out = [\"a\"]\n[returners.more]\nfan_out = [\"all\"]\n", "a fan_out name itself"),
            ("[returners.all]\nfan_out = [\"a\"]\nmodule = \"builtin:local-cache\"\n", "both `module` and `fan_out`"),
            ("[returners.all]\nfan_out = [\"a\"]\noptions = { x = 1 }\n", "takes no module settings"),
            ("[returners.all]\n", "needs `module`"),
        ] {
            let err = with(extra).unwrap_err().to_string();
            assert!(err.contains(says), "{extra}: {err}");
        }
    }

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(text, Path::new("test.toml"), Path::new("/"), &Overrides::default())
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { memory_mb = 3 }\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml: key `returners.x.limits"), "{msg}");
        assert!(msg.contains("memory_mb"), "{msg}");
        assert!(msg.contains("memory_mib"), "{msg}");
    }

    #[test]
    fn tcp_requires_token() {
        let err = parse("[server]\nlisten = \"tcp:127.0.0.1:4510\"\n").unwrap_err();
        assert!(err.to_string().contains("server.token_file"), "{err}");
    }

    #[test]
    fn bad_listen_is_named() {
        let err = parse("[server]\nlisten = \"http://x\"\n").unwrap_err();
        assert!(err.to_string().contains("key `server.listen`"), "{err}");
    }

    #[test]
    fn grant_profile_must_exist_and_match_kind() {
        let text = "[profiles.db]\nkind = \"mysql\"\nhost = \"h\"\nuser = \"u\"\ndatabase = \"d\"\n\
                    [returners.e]\nmodule = \"builtin:local-cache\"\n\
                    [returners.e.grants.etcd]\nprofile = \"db\"\nroot = \"/salt\"\nops = [\"read\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("returners.e.grants.etcd.profile"), "{err}");
        assert!(err.contains("kind `mysql`, expected `etcd`"), "{err}");
    }

    #[test]
    fn limits_resolve_with_defaults() {
        let cfg = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { deadline_ms = 50 }\n").unwrap();
        let r = cfg.returner("x").unwrap();
        assert_eq!(r.limits.deadline, Duration::from_millis(50));
        assert_eq!(r.limits.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(r.limits.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(cfg.server.listen, Listen::Unix(PathBuf::from("./var/returner-host.sock")));
    }

    #[test]
    fn rate_limit_defaults_its_burst_and_needs_a_rate() {
        let cfg = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { rate_per_second = 2.5 }\n").unwrap();
        assert_eq!(cfg.returner("x").unwrap().limits.rate, Some(Rate { per_second: 2.5, burst: 3 }));
        let err = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { burst = 3 }\n").unwrap_err();
        assert!(err.to_string().contains("returners.x.limits.burst"), "{err}");
        let err = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nsha256 = \"abc\"\n").unwrap_err();
        assert!(err.to_string().contains("returners.x.sha256"), "{err}");
    }

    #[test]
    fn pool_sizing_keys_are_checked() {
        let cfg = parse("[server]\ninstance_slots = 4\n[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { memories = 3 }\n").unwrap();
        assert_eq!(cfg.server.instance_slots, Some(4));
        assert_eq!(cfg.returner("x").unwrap().limits.memories, 3);
        let err = parse("[server]\ninstance_slots = 0\n").unwrap_err();
        assert!(err.to_string().contains("server.instance_slots"), "{err}");
        let err = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { memories = 17 }\n").unwrap_err();
        assert!(err.to_string().contains("returners.x.limits.memories"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused() {
        let err = parse("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = { max_concurrency = 0 }\n").unwrap_err();
        assert!(err.to_string().contains("returners.x.limits.max_concurrency"), "{err}");
    }

    #[test]
    fn every_limit_out_of_range_names_its_key_and_range() {
        for (limit, key, range) in [
            ("deadline_ms = 600001", "deadline_ms", "1 to 600000 ms"),
            ("memory_mib = 4097", "memory_mib", "1 to 4096 MiB"),
            ("memory_mib = 0", "memory_mib", "1 to 4096 MiB"),
            ("max_concurrency = 1025", "max_concurrency", "1 to 1024"),
            ("table_elements = 1000001", "table_elements", "1 to 1000000"),
            ("instances = 0", "instances", "1 to 1024"),
            ("max_result_mib = 4097", "max_result_mib", "1 to 4096 MiB"),
            ("rate_per_second = 0.0", "rate_per_second", "above 0"),
            ("rate_per_second = inf", "rate_per_second", "above 0"),
            ("rate_per_second = nan", "rate_per_second", "above 0"),
            ("rate_per_second = 1e9", "rate_per_second", "at most 1000000"),
            ("rate_per_second = 1.0, burst = 0", "burst", "1 to 1000000"),
        ] {
            let text = format!("[returners.x]\nmodule = \"builtin:local-cache\"\nlimits = {{ {limit} }}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("key `returners.x.limits.{key}`")), "{limit}: {err}");
            assert!(err.contains(range), "{limit}: {err}");
        }
        let edges = "limits = { deadline_ms = 600000, memory_mib = 4096, max_concurrency = 1024, max_result_mib = 4096 }";
        assert!(parse(&format!("[returners.x]\nmodule = \"builtin:local-cache\"\n{edges}\n")).is_ok());
    }

    #[test]
    fn server_sizes_out_of_range_are_refused() {
        for (server, key) in [
            ("max_body_bytes = 0", "server.max_body_bytes"),
            ("max_body_bytes = 1073741825", "server.max_body_bytes"),
            ("watch_interval_ms = 1", "server.watch_interval_ms"),
            ("watch_interval_ms = 86400001", "server.watch_interval_ms"),
        ] {
            let err = parse(&format!("[server]\n{server}\n")).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}`")) && err.contains("out of range"), "{server}: {err}");
        }
        assert_eq!(parse("[server]\nwatch_interval_ms = 0\n").unwrap().server.watch_interval, None);
    }

    fn grant_in(data_dir: &Path, dir: &Path) -> Result<HostConfig, ConfigError> {
        let text = format!(
            "[server]\ndata_dir = {}\n[returners.lc]\nmodule = \"builtin:local-cache\"\n[returners.lc.grants.fs]\ndir = {}\nmode = \"rw\"\n",
            toml_string(&data_dir.to_string_lossy()),
            toml_string(&dir.to_string_lossy())
        );
        parse(&text)
    }

    #[test]
    fn an_fs_grant_over_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("var");
        let compiled = data.join(COMPILED_DIR);
        std::fs::create_dir_all(compiled.join("x")).unwrap();
        std::fs::create_dir_all(data.join("jobs")).unwrap();
        std::os::unix::fs::symlink(&data, tmp.path().join("link-to-var")).unwrap();
        for granted in [data.clone(), tmp.path().to_owned(), compiled.clone(), compiled.join("x"), tmp.path().join("link-to-var")] {
            let err = grant_in(&data, &granted).unwrap_err().to_string();
            assert!(err.starts_with("test.toml: key `returners.lc.grants.fs.dir`"), "{}: {err}", granted.display());
            assert!(err.contains("the host's own"), "{}: {err}", granted.display());
        }
        grant_in(&data, &data.join("jobs")).expect("the default job cache beside the host's own dirs");
    }

    #[test]
    fn a_data_dir_not_made_yet_is_resolved_through_its_symlinked_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("alias")).unwrap();
        // data_dir does not exist yet; its parent is a symlink to `real`.
        let data = tmp.path().join("alias/var");
        let err = grant_in(&data, &real).unwrap_err().to_string();
        assert!(err.contains("holds"), "{err}");
        assert_eq!(resolve_symlinks(&tmp.path().join("alias/var/../var/compiled")), real.canonicalize().unwrap().join("var/compiled"));
    }

    #[test]
    fn design_md_shape_parses() {
        let dir = std::env::temp_dir();
        let text = format!(
            r#"
[server]
listen = "unix:/run/returner-host/sock"
token_file = "/etc/returner-host/token"
data_dir = "/var/lib/returner-host"

[profiles.etcd_main]
kind = "etcd"
endpoints = ["http://127.0.0.1:2379"]
username = "salt"
password_file = "/etc/returner-host/etcd.pass"

[profiles.salt_db]
kind = "mysql"
host = "127.0.0.1"
port = 3306
user = "salt"
password_file = "/etc/returner-host/mysql.pass"
database = "salt"

[returners.mysql]
module = "builtin:local-cache"
[returners.mysql.grants.mysql]
profile = "salt_db"
tables = {{ jids = ["select", "insert", "delete"], salt_returns = ["select", "insert", "delete"] }}

[returners.local_cache]
module = "builtin:local-cache"
options = {{ ttl = 3600 }}
limits = {{ memory_mib = 64, deadline_ms = 2000, max_concurrency = 16 }}
[returners.local_cache.grants.fs]
dir = {}
mode = "rw"
[returners.local_cache.grants.etcd]
profile = "etcd_main"
root = "/salt/return"
ops = ["read", "write", "delete"]
max_ttl_seconds = 86400
"#,
            toml_string(&dir.to_string_lossy())
        );
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.returners.len(), 2);
        let lc = cfg.returner("local_cache").unwrap();
        assert_eq!(lc.options.get("ttl"), Some(&serde_json::json!(3600)));
        assert_eq!(lc.grants.etcd.as_ref().unwrap().root, "/salt/return");
        assert_eq!(cfg.server.token_file, Some(PathBuf::from("/etc/returner-host/token")));
    }
}
