//! Seals on the compiled-module cache: each `.cwasm` file starts with an
//! HMAC-SHA256, under a key only the host reads, of the module and engine it
//! is for and of its bytes. Deserializing compiled code runs it as native
//! code, so a file that does not carry the host's seal is never loaded.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

/// The key's file in the cache directory, mode 0600. No grant reaches that
/// directory (config validation refuses one that would).
pub const KEY_FILE: &str = "seal.key";

/// Marks a sealed file, and its layout: this magic, the MAC, the bytes.
const MAGIC: &[u8; 8] = b"RHSEAL1\0";

const KEY_BYTES: usize = 32;
const MAC_BYTES: usize = 32;

/// The cache's key: read from `dir/seal.key`, or made from the kernel's
/// random source at the first start.
pub fn key(dir: &Path) -> anyhow::Result<[u8; KEY_BYTES]> {
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Ok(Some(key)) => return Ok(key),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .context("reading /dev/urandom for the compiled-module cache's key")?;
    // Written whole under a temporary name, then linked into place: another
    // host starting on the same data dir reads a whole key or none.
    let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path)?.with_context(|| format!("{} vanished as it was made", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

fn read_key(path: &Path) -> anyhow::Result<Option<[u8; KEY_BYTES]>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mode = file.metadata().with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        // Whoever can read the key can seal code the host will run.
        bail!("{} has mode {:o}; it must be readable by the host's user only (0600)", path.display(), mode & 0o777);
    }
    let mut key = [0u8; KEY_BYTES];
    let mut rest = Vec::new();
    file.read_exact(&mut key)
        .and_then(|()| file.read_to_end(&mut rest))
        .with_context(|| format!("reading {}", path.display()))?;
    if !rest.is_empty() {
        bail!("{} is not a key of {KEY_BYTES} bytes", path.display());
    }
    Ok(Some(key))
}

/// `bytes`, compiled for the cache entry `name`, with their seal.
pub fn seal(key: &[u8; KEY_BYTES], name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + MAC_BYTES + bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&mac(key, name, bytes));
    out.extend_from_slice(bytes);
    out
}

/// The compiled bytes of a sealed file of the cache entry `name`, or why
/// they are not to be trusted.
pub fn open<'a>(key: &[u8; KEY_BYTES], name: &str, sealed: &'a [u8]) -> Result<&'a [u8], &'static str> {
    let Some(rest) = sealed.strip_prefix(MAGIC) else {
        return Err("the file has no seal: written by something other than this host");
    };
    let (Some(given), Some(bytes)) = (rest.get(..MAC_BYTES), rest.get(MAC_BYTES..)) else {
        return Err("the file is shorter than a seal");
    };
    if !constant_time_eq(given, &mac(key, name, bytes)) {
        return Err("the seal does not match: the file was changed, or is another module's");
    }
    Ok(bytes)
}

/// HMAC-SHA256 (RFC 2104) of `name`, a NUL, then `bytes`.
fn mac(key: &[u8; KEY_BYTES], name: &str, bytes: &[u8]) -> [u8; MAC_BYTES] {
    hmac_sha256(key, &[name.as_bytes(), b"\0", bytes])
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_BYTES] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..MAC_BYTES].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let long_key = [0xaa; 131];
        let mac = hmac_sha256(&long_key, &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn a_seal_holds_only_for_its_bytes_its_entry_and_its_key() {
        let key = [7u8; KEY_BYTES];
        let sealed = seal(&key, "aaa-e1", b"compiled code");
        assert_eq!(open(&key, "aaa-e1", &sealed), Ok(&b"compiled code"[..]));
        assert!(open(&key, "bbb-e1", &sealed).is_err(), "another module's file");
        assert!(open(&[8u8; KEY_BYTES], "aaa-e1", &sealed).is_err(), "another key");
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(open(&key, "aaa-e1", &changed).is_err(), "a changed byte");
        assert!(open(&key, "aaa-e1", b"compiled code").is_err(), "no seal");
        assert!(open(&key, "aaa-e1", &sealed[..20]).is_err(), "cut short");
    }

    #[test]
    fn the_key_is_made_once_private_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let first = key(dir.path()).unwrap();
        assert_eq!(key(dir.path()).unwrap(), first);
        let path = dir.path().join(KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(key(dir.path()).unwrap_err().to_string().contains("0600"));
    }
}
