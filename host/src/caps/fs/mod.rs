//! The `fs` capability: one host directory, preopened for the guest through
//! WASI filesystem at [`GUEST_DIR`], read-only or read-write, a read-write
//! one under a size quota. cap-std underneath resolves every path inside it:
//! `..`, absolute paths and symlinks pointing out are refused. Nothing else
//! of the host filesystem exists for the guest.
//!
//! - `usage`: the bytes the directory holds, counted against the quota;
//! - `host`: `wasi:filesystem/types`, wasmtime-wasi's with every operation
//!   that can grow the directory claiming its growth first.

mod host;
mod usage;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::p2::bindings::filesystem;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub use host::QuotaFs;
pub use usage::{DirUsage, ENTRY_BYTES, RECOUNT_INTERVAL, REWALK_AFTER};

/// Where the granted directory appears inside the guest.
pub const GUEST_DIR: &str = "/data";

/// The quota of a read-write grant that does not set `quota_mib`: room for
/// a busy master's job cache, and a bound on a guest that writes in a loop,
/// which would otherwise fill the host's disk.
pub const DEFAULT_QUOTA_MIB: u64 = 1024;

/// Largest `quota_mib` accepted (16 TiB): a larger number is a typo.
pub const MAX_QUOTA_MIB: u64 = 16 * 1024 * 1024;

/// Whether the guest may change the directory.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsMode {
    /// Read files and list directories.
    Ro,
    /// Also create, write, rename and remove.
    Rw,
}

/// A returner's directory grant.
///
/// ```toml
/// [returners.local_cache.grants.fs]
/// dir = "/var/cache/salt/jobs"
/// mode = "rw"
/// quota_mib = 1024    # default; what the directory may hold, for `rw`
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsGrant {
    /// Host directory; it must exist.
    pub dir: PathBuf,
    /// `ro` or `rw`.
    pub mode: FsMode,
    /// MiB the directory may hold when `rw` ([`DEFAULT_QUOTA_MIB`] when unset).
    #[serde(default)]
    pub quota_mib: Option<u64>,
}

impl FsGrant {
    /// A grant of `dir` with the default quota.
    pub fn new(dir: PathBuf, mode: FsMode) -> Self {
        Self { dir, mode, quota_mib: None }
    }

    /// The key under the grant and what is wrong with it, if anything.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self.quota_mib {
            Some(0) => Err(("quota_mib", "expected at least 1 MiB".into())),
            Some(m) if m > MAX_QUOTA_MIB => Err(("quota_mib", format!("{m} MiB is over the most, {MAX_QUOTA_MIB} MiB (16 TiB)"))),
            _ => Ok(()),
        }
    }

    /// The quota in bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.quota_mib.unwrap_or(DEFAULT_QUOTA_MIB).min(MAX_QUOTA_MIB) * 1024 * 1024
    }

    /// The directory's usage, measured now, for a read-write grant: every
    /// call of the returner counts against it. Walks the directory: call it
    /// once, when the returner loads.
    pub fn measure(&self) -> Option<Arc<DirUsage>> {
        (self.mode == FsMode::Rw).then(|| Arc::new(DirUsage::measure(&self.dir, self.quota_bytes())))
    }

    /// Preopen the granted directory in a call's WASI context.
    pub fn preopen(&self, wasi: &mut WasiCtxBuilder) -> anyhow::Result<()> {
        let perms = match self.mode {
            FsMode::Ro => FsPerms::ReadOnly,
            FsMode::Rw => FsPerms::ReadWrite,
        };
        wasi.preopened_dir(&self.dir, GUEST_DIR, perms)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("cannot open granted directory {}: {e}", self.dir.display()))
    }
}

/// Per-call fs state: whose call it is and the directory's usage, for a
/// read-write grant.
#[derive(Clone, Debug)]
pub struct FsCtx {
    returner: Arc<str>,
    usage: Option<Arc<DirUsage>>,
    /// The call's first write the quota refused, as the host words it.
    refused: Arc<OnceLock<String>>,
}

impl FsCtx {
    /// State for one call of `returner`; `usage` is its grant's, shared.
    pub fn new(returner: Arc<str>, usage: Option<Arc<DirUsage>>) -> Self {
        Self { returner, usage, refused: Arc::default() }
    }

    /// The first write of this call its quota refused, if any. The guest
    /// saw only `insufficient-space` (Rust's std: "No space left on
    /// device", or `EIO`), and may well have reported it as a full disk.
    pub fn quota_refusal(&self) -> Option<&str> {
        self.refused.get().map(String::as_str)
    }
}

/// A store's data that can lend its call's filesystem under its quota.
pub trait QuotaFsView: Send {
    /// wasmtime-wasi's filesystem of the call, under the call's quota.
    fn quota_fs(&mut self) -> QuotaFs<'_>;
}

struct HasQuotaFs;
impl HasData for HasQuotaFs {
    type Data<'a> = QuotaFs<'a>;
}

/// Link `wasi:filesystem/types` (the quota-keeping one).
pub fn add_to_linker<T: QuotaFsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    filesystem::types::add_to_linker::<T, HasQuotaFs>(linker, T::quota_fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(quota_mib: Option<u64>) -> FsGrant {
        FsGrant { quota_mib, ..FsGrant::new(PathBuf::from("/tmp"), FsMode::Rw) }
    }

    #[test]
    fn the_quota_defaults_and_is_validated() {
        assert_eq!(grant(None).quota_bytes(), DEFAULT_QUOTA_MIB * 1024 * 1024);
        assert_eq!(grant(Some(3)).quota_bytes(), 3 * 1024 * 1024);
        assert!(grant(Some(1)).validate().is_ok());
        assert_eq!(grant(Some(0)).validate().unwrap_err().0, "quota_mib");
        assert!(grant(Some(MAX_QUOTA_MIB + 1)).validate().unwrap_err().1.contains("over the most"));
        let ro = FsGrant::new(PathBuf::from("/tmp"), FsMode::Ro);
        assert!(ro.measure().is_none(), "a read-only grant has no quota to keep");
    }
}
