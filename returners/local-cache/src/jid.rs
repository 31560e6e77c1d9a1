//! Where a job lives in the cache: Salt's `jid_dir` with `hash_type: sha256`.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The job's directory relative to the cache root: `<hex[..2]>/<hex[2..]>` of
/// the sha256 of the jid, like Salt's `jid_dir` with `hash_type: sha256`.
/// Hashing also means a jid never becomes a path of its own.
pub fn jid_dir(jid: &str) -> PathBuf {
    let hex: String = Sha256::digest(jid.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    PathBuf::from(&hex[..2]).join(&hex[2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jid_dir_splits_the_sha256_hex_after_two_digits() {
        // Values from Python: hashlib.sha256(jid.encode()).hexdigest().
        assert_eq!(
            jid_dir("20261123084300320186"),
            PathBuf::from("96")
                .join("8d6e2e57d69f5cdb85c5b07133322b349f5315e83ed7f7a110aaa11f1d5751")
        );
        assert_eq!(
            jid_dir("abc"),
            PathBuf::from("ba")
                .join("7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(jid_dir("../../etc").components().count(), 2);
    }
}
