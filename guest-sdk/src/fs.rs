//! Files in the directory the returner was granted (the `fs` grant).
//!
//! A returner uses plain [`std::fs`]. The host preopens the granted directory
//! at the guest path [`GRANTED_DIR`] and nothing else of the host filesystem
//! exists for the guest, so every path a returner opens starts there:
//! `fs::root().join("jobs")`. Use absolute paths: a relative path resolves
//! against the guest's working directory `/`, which is no preopen, and fails
//! with `NotFound`. Without an `fs` grant there is no preopen and every file
//! operation fails. A read-write grant has a quota: past it, creating an
//! entry or `set_len` fails with `ErrorKind::StorageFull` and a write with an
//! I/O error (`os error 29`), and nothing past the quota is written.

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The guest path at which the host mounts the granted directory.
pub const GRANTED_DIR: &str = "/data";

/// The granted directory, as a path to join onto.
pub fn root() -> &'static Path {
    Path::new(GRANTED_DIR)
}

/// 16 hex digits that differ between any two calls, for temporary names.
///
/// Each call runs in a fresh instance, so a counter would restart at zero
/// every time and collide with a concurrent call; instead this mixes the
/// standard library's random hash keys (seeded from `wasi:random` on
/// wasm32-wasip2, and different for each `RandomState`) with the wall clock.
pub fn unique_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

/// A fresh name beside `target` for writing it atomically:
/// `<dir>/.tmp.<file name>.<unique token>`. It starts with a dot so readers
/// that list the directory can skip it.
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".tmp.{name}.{}", unique_token()))
}

/// Write `contents` to `path` so that a reader sees either the old file or
/// the whole new one, never a part: write a temporary file beside it, then
/// rename it over `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temp = temp_path_for(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(contents))
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_tokens_differ_and_are_hex() {
        let a = unique_token();
        let b = unique_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn temp_paths_are_hidden_siblings() {
        let temp = temp_path_for(Path::new("/data/ab/cd/.load.p"));
        assert_eq!(temp.parent(), Some(Path::new("/data/ab/cd")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".tmp..load.p."), "{name}");
    }

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("returner-sdk-fs-{}", unique_token()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("return.p");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
