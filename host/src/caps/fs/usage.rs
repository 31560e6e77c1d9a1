//! The bytes a read-write fs grant's directory holds, counted against the
//! grant's quota and shared by every call of the returner.
//!
//! The count is the sum, over every entry under the directory, of
//! [`ENTRY_BYTES`] plus the entry's length (files and symbolic links), plus
//! the length of files unlinked while a call still holds them open. It is
//! measured by walking the directory when the returner loads, then kept as a
//! bound that is never below what the directory holds: each operation that
//! can grow the directory claims its growth first and is refused when the
//! claim does not fit; operations that free space only mark the count as
//! possibly high, and the directory is walked again when a claim does not fit
//! and something may have been freed since the last walk (or the last walk
//! is older than [`REWALK_AFTER`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// What each entry (file, directory, symbolic link) counts beside its
/// length: about the block and inode it takes on disk. Without it a guest
/// could exhaust the host filesystem's inodes with empty files.
pub const ENTRY_BYTES: u64 = 4096;

/// Least time between two walks of one directory. Without it a guest that
/// frees a byte before each write that does not fit would make the host
/// walk its whole directory for every write.
pub const RECOUNT_INTERVAL: Duration = Duration::from_millis(200);

/// Age after which a claim that does not fit walks the directory again even
/// though no call freed anything: space an admin freed is found within it.
pub const REWALK_AFTER: Duration = Duration::from_secs(60);

/// A claim refused: the directory's quota has no room for it.
#[derive(Debug)]
pub struct QuotaFull;

/// What a growing operation failed with.
#[derive(Debug)]
pub enum GrowError {
    /// The quota had no room.
    Full,
    /// The operation itself failed.
    Io(io::Error),
}

impl From<io::Error> for GrowError {
    fn from(e: io::Error) -> Self {
        GrowError::Io(e)
    }
}

impl From<QuotaFull> for GrowError {
    fn from(_: QuotaFull) -> Self {
        GrowError::Full
    }
}

/// One directory's usage against its quota.
#[derive(Debug)]
pub struct DirUsage {
    dir: PathBuf,
    quota: u64,
    /// Bytes counted: never less than the directory holds.
    used: AtomicU64,
    /// Held shared by every operation that can grow the directory, for its
    /// whole length, and exclusively by a walk, so that a walk never misses
    /// growth in flight.
    growth: Arc<RwLock<()>>,
    /// Whether `used` may be above what the directory holds (something was
    /// freed, truncated or claimed twice since the last walk): only then can
    /// a walk find room.
    high: AtomicBool,
    /// When the directory was last walked.
    walked: Mutex<Instant>,
    /// Files opened for writing, so that a walk counts those unlinked while
    /// still open, whose bytes stay on disk until the call ends.
    open_files: Mutex<Vec<Weak<File>>>,
}

impl DirUsage {
    /// The usage of `dir` under `quota` bytes, walking it now. A directory
    /// that cannot be walked counts as full (with a warning), so a returner
    /// cannot make the host fail to start by making its directory unreadable.
    pub fn measure(dir: &Path, quota: u64) -> Self {
        let usage = Self {
            dir: dir.to_owned(),
            quota,
            used: AtomicU64::new(0),
            growth: Arc::new(RwLock::new(())),
            high: AtomicBool::new(false),
            walked: Mutex::new(Instant::now()),
            open_files: Mutex::new(Vec::new()),
        };
        match usage.walk() {
            Ok(used) => {
                usage.used.store(used, Ordering::Relaxed);
                if used > quota {
                    tracing::warn!(dir = %dir.display(), used, quota, "the fs grant's directory is over its quota; writes are refused until it shrinks");
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot measure the fs grant's directory; writes are refused until it can be");
                usage.used.store(quota.saturating_add(1), Ordering::Relaxed);
                usage.high.store(true, Ordering::Relaxed);
            }
        }
        usage
    }

    /// The quota, in bytes.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The granted directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claim `bytes` of growth, if they fit.
    pub fn claim(&self, bytes: u64) -> Result<(), QuotaFull> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.quota)
            })
            .map(|_| ())
            .map_err(|_| QuotaFull)
    }

    /// Give back a claim whose growth was not made (a creation that
    /// failed: nothing was created). Only while the claim's guard is held,
    /// so that no walk has counted the directory since the claim.
    pub fn release(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
    }

    /// The count may now be above what the directory holds.
    pub fn mark_high(&self) {
        self.high.store(true, Ordering::Release);
    }

    /// Remember a file opened for writing.
    pub fn track_open(&self, file: &Arc<File>) {
        let mut files = self.open_files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.len() >= 64 && files.len().is_power_of_two() {
            files.retain(|f| f.strong_count() > 0);
        }
        files.push(Arc::downgrade(file));
    }

    /// Claim `bytes`, walking the directory again if that may make room;
    /// the guard keeps walks away until the caller has grown the directory.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<OwnedRwLockReadGuard<()>, QuotaFull> {
        loop {
            let guard = self.growth.clone().read_owned().await;
            match self.claim(bytes) {
                Ok(()) => return Ok(guard),
                Err(full) => {
                    drop(guard);
                    if !self.rewalk().await {
                        return Err(full);
                    }
                }
            }
        }
    }

    /// Run `op` on a blocking thread while no walk runs. `op` claims the
    /// growth it is about to make (with [`DirUsage::claim`]) before making
    /// it; when a claim is refused and a walk may make room, the directory
    /// is walked and `op` runs once more.
    pub async fn grow<R, F>(self: &Arc<Self>, op: F) -> Result<R, GrowError>
    where
        F: Fn(&DirUsage) -> Result<R, GrowError> + Clone + Send + 'static,
        R: Send + 'static,
    {
        loop {
            let guard = self.growth.clone().read_owned().await;
            let (usage, attempt) = (self.clone(), op.clone());
            let done = tokio::task::spawn_blocking(move || {
                let _no_walk = guard;
                attempt(usage.as_ref())
            })
            .await
            .map_err(|e| GrowError::Io(io::Error::other(e)))?;
            match done {
                Err(GrowError::Full) if self.rewalk().await => continue,
                done => return done,
            }
        }
    }

    /// Whether a walk may find room now.
    fn may_rewalk(&self) -> bool {
        let since = self.walked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).elapsed();
        (self.high.load(Ordering::Acquire) && since >= RECOUNT_INTERVAL) || since >= REWALK_AFTER
    }

    /// Walk the directory again if that may find room; whether it was walked.
    async fn rewalk(self: &Arc<Self>) -> bool {
        if !self.may_rewalk() {
            return false;
        }
        let exclusive = self.growth.clone().write_owned().await;
        // Another call may have walked it while this one waited.
        if !self.may_rewalk() {
            return false;
        }
        *self.walked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        // Whatever frees space from here on marks the count high again.
        self.high.store(false, Ordering::Release);
        let usage = self.clone();
        let counted = tokio::task::spawn_blocking(move || {
            let _no_growth = exclusive;
            usage.walk()
        })
        .await;
        match counted {
            Ok(Ok(used)) => {
                tracing::debug!(dir = %self.dir.display(), used, quota = self.quota, "fs grant walked again");
                self.used.store(used, Ordering::Release);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot measure the fs grant's directory; its count stays as it was");
                self.mark_high();
                false
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "measuring the fs grant's directory failed");
                self.mark_high();
                false
            }
        }
    }

    /// The count, measured: every entry under the directory, and the files
    /// unlinked while open. Stops once over the quota, so a walk visits at
    /// most `quota / ENTRY_BYTES` entries however large the directory.
    fn walk(&self) -> io::Result<u64> {
        let mut used: u64 = 0;
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.dir => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            };
            for entry in entries {
                let entry = entry?;
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", entry.path().display()))),
                };
                used = used.saturating_add(ENTRY_BYTES);
                if meta.is_dir() {
                    pending.push(entry.path());
                } else {
                    used = used.saturating_add(meta.len());
                }
                if used > self.quota {
                    return Ok(used);
                }
            }
        }
        let files = self.open_files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for file in files.iter().filter_map(Weak::upgrade) {
            if let Ok(meta) = file.metadata()
                && meta.nlink() == 0
            {
                used = used.saturating_add(meta.len());
            }
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn a_walk_counts_entries_and_bytes_and_stops_past_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::os::unix::fs::symlink("a/b/f", dir.path().join("link")).unwrap();
        let usage = DirUsage::measure(dir.path(), 1 << 30);
        assert_eq!(usage.used(), 4 * ENTRY_BYTES + 1000 + "a/b/f".len() as u64);
        let small = DirUsage::measure(dir.path(), ENTRY_BYTES);
        assert!(small.used() > ENTRY_BYTES, "over the quota is as far as it counts");
        assert!(small.claim(1).is_err());
    }

    #[test]
    fn claims_fit_under_the_quota_and_a_walk_finds_what_was_freed() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Arc::new(DirUsage::measure(dir.path(), 3 * ENTRY_BYTES));
        assert_eq!(usage.used(), 0);
        usage.claim(2 * ENTRY_BYTES).unwrap();
        assert!(usage.claim(2 * ENTRY_BYTES).is_err(), "over the quota");
        block(async {
            // Nothing was freed: no walk, the claim is refused.
            assert!(usage.reserve(2 * ENTRY_BYTES).await.is_err());
            usage.mark_high();
            *usage.walked.lock().unwrap() -= RECOUNT_INTERVAL;
            // The walk finds the directory empty: the claim fits.
            let _guard = usage.reserve(2 * ENTRY_BYTES).await.unwrap();
        });
        assert_eq!(usage.used(), 2 * ENTRY_BYTES);
        // A creation that failed gives its claim back: no walk needed.
        usage.claim(ENTRY_BYTES).unwrap();
        usage.release(ENTRY_BYTES);
        assert_eq!(usage.used(), 2 * ENTRY_BYTES);
    }

    #[test]
    fn files_unlinked_while_open_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 5000]).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let usage = DirUsage::measure(dir.path(), 1 << 20);
        usage.track_open(&file);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(usage.walk().unwrap(), 5000);
        drop(file);
        assert_eq!(usage.walk().unwrap(), 0);
    }
}
