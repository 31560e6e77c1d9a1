//! The `fs` capability: one host directory, preopened for the guest through
//! WASI filesystem at [`GUEST_DIR`], read-only or read-write. cap-std
//! underneath resolves every path inside it: `..`, absolute paths and
//! symlinks pointing out are refused. Nothing else of the host filesystem
//! exists for the guest.

use std::path::PathBuf;

use serde::Deserialize;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Where the granted directory appears inside the guest.
pub const GUEST_DIR: &str = "/data";

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
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsGrant {
    /// Host directory; it must exist.
    pub dir: PathBuf,
    /// `ro` or `rw`.
    pub mode: FsMode,
}

impl FsGrant {
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
