//! The spool's disk reserve: a file of zeros, `data_dir/spool/reserve`,
//! given up when the disk under the spool fills, so that the store can
//! still commit the removal of delivered writes (redb writes new pages even
//! to remove), and taken back once the disk has room again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The reserve file's name inside the spool's directory.
pub const RESERVE_FILE: &str = "reserve";

/// Bytes written at a time when the reserve is taken.
const CHUNK: usize = 1 << 20;

pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
}

impl Reserve {
    /// The reserve of `bytes` in `dir`: found there from an earlier run, or
    /// taken now if the disk has room for it.
    pub fn new(dir: &Path, bytes: u64) -> Self {
        let path = dir.join(RESERVE_FILE);
        let held = bytes > 0 && std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes);
        let mut reserve = Self { path, bytes, held };
        reserve.restore();
        reserve
    }

    /// Give the reserve's bytes back to the disk; whether there were any.
    pub fn release(&mut self) -> bool {
        if !self.held {
            return false;
        }
        self.held = false;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(
                    reserve = %self.path.display(), bytes = self.bytes,
                    "the spool's disk is full: its reserve is given up so that delivery can record what it delivered; \
                     writes that find no room are refused, and the reserve is taken back once there is"
                );
                true
            }
            Err(e) => {
                tracing::error!(reserve = %self.path.display(), error = %e, "cannot remove the spool's reserve");
                false
            }
        }
    }

    /// Take the reserve back if it is not held and the disk has room for
    /// twice its size (so taking it does not fill the disk again).
    pub fn restore(&mut self) {
        if self.held || self.bytes == 0 {
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Ok(stat) = rustix::fs::statvfs(dir) else { return };
        if stat.f_bavail.saturating_mul(stat.f_frsize) < self.bytes.saturating_mul(2) {
            return;
        }
        match self.write() {
            Ok(()) => {
                self.held = true;
                tracing::info!(reserve = %self.path.display(), bytes = self.bytes, "the spool's disk reserve is held");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                tracing::warn!(reserve = %self.path.display(), error = %e, "cannot take the spool's disk reserve; trying again later");
            }
        }
    }

    /// Write the file: real blocks of zeros, on disk before it counts.
    fn write(&self) -> std::io::Result<()> {
        let mut f = std::fs::File::create(&self.path)?;
        let zeros = vec![0u8; CHUNK];
        let mut left = self.bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    }
}
