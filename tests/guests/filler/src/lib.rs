//! A hostile fixture that fills its granted directory every way WASI offers,
//! to see where the host's quota stops it: `get_endtime(spec)` runs one fill.
//! `write:N` writes N MiB to a file in 1 MiB writes, `append:N` appends them,
//! `set-size:N` sets a file's length to N MiB, `seek:N` writes one byte N MiB
//! into a new file, `files:N` creates N empty files, `clean` removes everything
//! in the directory. It answers `{"written": bytes or files, "error": message
//! or null, "kind": the io::ErrorKind or null}`.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};

use returner_sdk::fs::root;
use returner_sdk::{Error, Result, Returner, Value, json};

struct Filler;

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

impl Returner for Filler {
    fn get_endtime(spec: &str) -> Result<Option<String>> {
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

returner_sdk::export_returner!(Filler);
