//! A hostile fixture that abuses the host in the ways a trap or a loop do not:
//! - `get_load` recurses without end, to exhaust the stack;
//! - `get_jid(megabytes)` answers a JSON string of that many MiB;
//! - `get_fun` calls host functions (config, log) as fast as it can, for ever;
//! - `get_endtime(spec)` fills its granted directory: `write:N` writes N MiB
//!   to a file in 1 MiB writes, `append:N` appends them, `set-size:N` sets a
//!   file's length to N MiB, `seek:N` writes one byte N MiB into a new file,
//!   `files:N` creates N empty files, `clean` removes everything it made.
//!   It answers `{"written": bytes or files, "error": message or null,
//!   "kind": the io::ErrorKind or null}`.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{self, Seek, SeekFrom, Write};

use returner_sdk::fs::root;
use returner_sdk::{Error, Result, Returner, Value, config, json, log};

struct Abuser;

/// Recursion the optimiser cannot turn into a loop: each frame keeps a
/// buffer live across the call.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    let below = descend(black_box(depth + 1));
    black_box(frame[(depth % 32) as usize]).wrapping_add(below)
}

impl Returner for Abuser {
    fn get_load(_jid: &str) -> Result<Value> {
        Ok(Value::from(descend(0)))
    }

    fn get_jid(megabytes: &str) -> Result<Value> {
        let mib: usize = megabytes.parse().map_err(|e| Error::invalid("jid", e))?;
        Ok(Value::String("x".repeat(mib * 1024 * 1024)))
    }

    fn get_endtime(spec: &str) -> Result<Option<String>> {
        Self::get_endtime_fill(spec)
    }

    fn get_fun(_fun: &str) -> Result<Value> {
        let mut calls: u64 = 0;
        loop {
            calls += 1;
            black_box(config::get("flood"));
            log::info(&format!("host call {calls}"));
        }
    }
}

/// Run one `get_endtime` fill: how much was written before the first error.
fn fill(how: &str, n: u64) -> (u64, io::Result<()>) {
    const MIB: usize = 1024 * 1024;
    let mut written = 0;
    let outcome = (|| {
        match how {
            "write" | "append" => {
                let path = root().join(format!("{how}.bin"));
                let mut file = OpenOptions::new().create(true).write(true).append(how == "append").open(path)?;
                let chunk = vec![7u8; MIB];
                for _ in 0..n {
                    file.write_all(&chunk)?;
                    written += MIB as u64;
                }
            }
            "set-size" => {
                fs::File::create(root().join("sized.bin"))?.set_len(n * MIB as u64)?;
                written = n * MIB as u64;
            }
            "seek" => {
                let mut file = fs::File::create(root().join("sparse.bin"))?;
                file.seek(SeekFrom::Start(n * MIB as u64))?;
                file.write_all(b"x")?;
                written = 1;
            }
            "files" => {
                fs::create_dir_all(root().join("many"))?;
                for i in 0..n {
                    fs::File::create(root().join(format!("many/{i}")))?;
                    written += 1;
                }
            }
            "clean" => {
                for entry in fs::read_dir(root())? {
                    let path = entry?.path();
                    if path.is_dir() { fs::remove_dir_all(path)? } else { fs::remove_file(path)? }
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown fill `{how}`"))),
        }
        Ok(())
    })();
    (written, outcome)
}

impl Abuser {
    fn get_endtime_fill(spec: &str) -> Result<Option<String>> {
        let (how, n) = spec.split_once(':').unwrap_or((spec, "0"));
        let n: u64 = n.parse().map_err(|e| Error::invalid("jid", e))?;
        let (written, outcome) = fill(how, n);
        let (error, kind) = match &outcome {
            Ok(()) => (Value::Null, Value::Null),
            Err(e) => (json!(e.to_string()), json!(format!("{:?}", e.kind()))),
        };
        Ok(Some(json!({ "written": written, "error": error, "kind": kind }).to_string()))
    }
}

returner_sdk::export_returner!(Abuser);
