//! Loading a component: the header check, compilation with an on-disk cache
//! keyed by the module's sha256 and the engine's compatibility hash (each
//! file sealed, see `seal`), the world check, the optional batch export, and
//! one `InstancePre` per module.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};

use super::{ReturnerComponentPre, Runtime, seal};
use crate::bindings::{BATCH_FUNCTION, BATCH_INTERFACE, GuestError, JobReturn, RETURNER_INTERFACE, WIT_VERSION};

/// Salt's returner function names, in the order of the WIT interface.
pub const FUNCTIONS: [&str; 14] = [
    "returner",
    "save_load",
    "get_load",
    "get_jid",
    "get_fun",
    "get_jids",
    "get_jids_filter",
    "get_minions",
    "prep_jid",
    "save_minions",
    "clean_old_jobs",
    "event_return",
    "update_endtime",
    "get_endtime",
];

/// A compiled returner component, ready to instantiate.
#[derive(Clone)]
pub struct Module {
    pub(super) pre: ReturnerComponentPre<super::CallState>,
    /// `salt:returner/batch.returner-batch`, when the module exports it;
    /// its type was checked at load.
    pub(super) batch: Option<ComponentExportIndex>,
    info: ModuleInfo,
}

/// The parameters and results of `returner-batch`, as the runtime calls it.
pub(super) type BatchParams<'a> = (&'a [JobReturn],);
/// See [`BatchParams`].
pub(super) type BatchResults = (Result<(), GuestError>,);

/// What a module is, for `inspect`, `check` and logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleInfo {
    /// sha256 of the `.wasm` bytes, hex.
    pub sha256: String,
    /// The exported returner interface with its version, e.g. `salt:returner/returner@0.1.4`.
    pub exports: String,
    /// Every interface the component imports, sorted.
    pub imports: Vec<String>,
    /// The exported batch interface with its version, e.g.
    /// `salt:returner/batch@0.1.4`, when the module takes consecutive
    /// returns in one call; `None` when it takes one `returner` call each.
    pub batch: Option<String>,
}

impl Module {
    /// What the module is.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// Whether the module exports `salt:returner/batch`.
    pub fn supports_batch(&self) -> bool {
        self.batch.is_some()
    }
}

impl Runtime {
    /// Compile (or load from the cache) and check a returner component.
    pub fn load_module(&self, bytes: &[u8]) -> anyhow::Result<Module> {
        check_header(bytes)?;
        let sha256 = sha256_hex(bytes);
        let component = self.compile_cached(bytes, &sha256)?;
        let ty = component.component_type();
        let imports: Vec<String> = {
            let mut v: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
            v.sort();
            v
        };
        let exported: Vec<String> = ty
            .exports(&self.engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports = check_world(&exported)?;
        let foreign: Vec<&str> = imports.iter().map(String::as_str).filter(|i| !crate::caps::is_linked(i)).collect();
        if !foreign.is_empty() {
            bail!(
                "the component imports what this host does not provide (only the salt:returner interfaces and WASI 0.2 are linked): {}",
                foreign.join(", ")
            );
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow!("the component imports something this host does not provide (only the salt:returner interfaces and WASI 0.2 are linked): {e:#}")
        })?;
        let (batch_name, batch) = match compatible_export(&exported, BATCH_INTERFACE)? {
            Some(name) => {
                let index = batch_export(&component, &pre, &name)?;
                (Some(name), Some(index))
            }
            None => (None, None),
        };
        let pre = ReturnerComponentPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not match the salt:returner world")?;
        Ok(Module { pre, batch, info: ModuleInfo { sha256, exports, imports, batch: batch_name } })
    }

    /// Read a `.wasm` file and load it.
    pub fn load_module_file(&self, path: &Path) -> anyhow::Result<Module> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.load_module(&bytes).with_context(|| format!("loading {}", path.display()))
    }

    /// The component for `bytes`: from the cache when a sealed compiled
    /// form of it is there, else compiled and cached sealed. A cached file
    /// whose seal does not hold is never deserialized: it is audited as
    /// tampered and replaced.
    fn compile_cached(&self, bytes: &[u8], sha256: &str) -> anyhow::Result<Component> {
        let compile = || {
            Component::from_binary(&self.engine, bytes)
                .map_err(anyhow::Error::from)
                .context("compiling the component")
        };
        let Some(dir) = &self.compiled_dir else {
            return compile();
        };
        let key = match seal::key(dir) {
            Ok(key) => key,
            Err(e) => {
                // Not fatal: the module is compiled in memory, as without a cache.
                tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "compiled-module cache off");
                return compile();
            }
        };
        let name = format!("{sha256}-{}", self.engine_hash);
        let path = dir.join(format!("{name}.cwasm"));
        match std::fs::read(&path) {
            Ok(sealed) => match seal::open(&key, &name, &sealed) {
                // SAFETY: these bytes are the ones this host sealed (the MAC, under a
                // key only the host reads, binds them to this module and engine) and
                // they are in memory, so nothing can change them between the check
                // and the use; wasmtime checks the header again.
                Ok(cwasm) => match unsafe { Component::deserialize(&self.engine, cwasm) } {
                    Ok(c) => return Ok(c),
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled module"),
                },
                Err(reason) => crate::caps::audit::compiled_module_tampered(sha256, &path.to_string_lossy(), reason),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read the compiled module; compiling"),
        }
        let component = compile()?;
        let write = || -> anyhow::Result<()> {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, seal::seal(&key, &name, &component.serialize()?))?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        };
        if let Err(e) = write() {
            // Not fatal: the next start compiles again.
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled module");
        }
        Ok(component)
    }
}

/// Refuse anything that is not a WebAssembly component, with the reason.
/// The sha256 of a module's bytes, lowercase hex: what `sha256` pins match.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (no `\\0asm` header)");
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => bail!(
            "a core WebAssembly module, not a component: build the returner with `cargo build --target wasm32-wasip2`"
        ),
        _ => bail!("a WebAssembly binary of an unknown version or layer {:02x?}", &bytes[4..8]),
    }
}

/// The component must export `salt:returner/returner` of a compatible version.
fn check_world(exported: &[String]) -> anyhow::Result<String> {
    if let Some(name) = compatible_export(exported, RETURNER_INTERFACE)? {
        return Ok(name);
    }
    let list = if exported.is_empty() { "nothing".to_owned() } else { exported.join(", ") };
    bail!("not a returner component: it exports {list}; expected {RETURNER_INTERFACE}@{WIT_VERSION} (targets another world?)")
}

/// The exported `interface` (with its version) among `exported`, if any;
/// an error if it is there in a version this host does not speak.
fn compatible_export(exported: &[String], interface: &str) -> anyhow::Result<Option<String>> {
    let want_minor = minor_prefix(WIT_VERSION);
    for name in exported {
        if let Some(version) = name.strip_prefix(interface).and_then(|v| v.strip_prefix('@')) {
            if minor_prefix(version) == want_minor {
                return Ok(Some(name.clone()));
            }
            bail!("the component exports {name}, but this host speaks salt:returner@{WIT_VERSION} (compatible: {want_minor}.x)");
        }
    }
    Ok(None)
}

/// The `returner-batch` function of the exported batch interface `name`,
/// with its type checked now, so a module whose batch export does not match
/// the WIT is refused at load rather than at its first delivery.
fn batch_export(
    component: &Component,
    pre: &wasmtime::component::InstancePre<super::CallState>,
    name: &str,
) -> anyhow::Result<ComponentExportIndex> {
    let wanted = format!("func(rets: list<job-return>) -> result<_, error> of salt:returner@{WIT_VERSION}");
    let (_, interface) = component.get_export(None, name).with_context(|| format!("the component's export {name} vanished"))?;
    let Some((item, func)) = component.get_export(Some(&interface), BATCH_FUNCTION) else {
        bail!("the component exports {name} without its function {BATCH_FUNCTION} ({wanted})");
    };
    let ComponentItem::ComponentFunc(ty) = item else {
        bail!("the component's {name}.{BATCH_FUNCTION} is not a function; expected {wanted}");
    };
    // The check `get_typed_func` makes at every call, made once here. It is
    // what wasmtime's own generated bindings call (hence hidden in its docs).
    ty.typecheck::<BatchParams<'static>, BatchResults>(&pre.instance_type())
        .map_err(|e| anyhow!("the component's {name}.{BATCH_FUNCTION} has the wrong type (expected {wanted}): {e:#}"))?;
    Ok(func)
}

/// `0.1` of `0.1.3`: the semver-compatible part for 0.x versions.
fn minor_prefix(version: &str) -> &str {
    let mut dots = version.match_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &version[..i],
        _ => version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_core_modules_and_junk() {
        assert!(check_header(b"hello world").unwrap_err().to_string().contains("not a WebAssembly file"));
        let core = b"\0asm\x01\0\0\0";
        assert!(check_header(core).unwrap_err().to_string().contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn linked_imports_are_recognised_by_name_and_version() {
        assert!(crate::caps::is_linked("salt:returner/log@0.1.0"));
        assert!(crate::caps::is_linked("wasi:filesystem/types@0.2.4"));
        assert!(crate::caps::is_linked("wasi:sockets/tcp@0.2.9"));
        assert!(!crate::caps::is_linked("salt:returner/log@0.2.0"));
        assert!(!crate::caps::is_linked("wasi:http/outgoing-handler@0.2.0"));
    }

    #[test]
    fn world_check_wants_compatible_returner_export() {
        let ok = vec!["salt:returner/returner@0.1.7".to_owned()];
        assert_eq!(check_world(&ok).unwrap(), "salt:returner/returner@0.1.7");
        let newer = vec!["salt:returner/returner@0.2.0".to_owned()];
        assert!(check_world(&newer).unwrap_err().to_string().contains("speaks salt:returner@0.1.4"));
        let other = vec!["wasi:http/incoming-handler@0.2.0".to_owned()];
        let msg = check_world(&other).unwrap_err().to_string();
        assert!(msg.contains("not a returner component") && msg.contains("wasi:http"), "{msg}");
    }

    #[test]
    fn the_batch_export_is_optional_but_must_be_of_a_compatible_version() {
        let without = vec!["salt:returner/returner@0.1.0".to_owned()];
        assert_eq!(compatible_export(&without, BATCH_INTERFACE).unwrap(), None);
        let with = vec!["salt:returner/returner@0.1.2".to_owned(), "salt:returner/batch@0.1.3".to_owned()];
        assert_eq!(compatible_export(&with, BATCH_INTERFACE).unwrap().as_deref(), Some("salt:returner/batch@0.1.3"));
        let newer = vec!["salt:returner/batch@0.2.0".to_owned()];
        let msg = compatible_export(&newer, BATCH_INTERFACE).unwrap_err().to_string();
        assert!(msg.contains("salt:returner/batch@0.2.0") && msg.contains("compatible: 0.1.x"), "{msg}");
    }
}
