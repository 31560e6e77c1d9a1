//! A hostile fixture: its `returner` opens a TCP connection, so the
//! component imports `wasi:sockets`, which the host does not link. The host
//! must refuse it at load, naming those imports.

use returner_sdk::{Error, JobReturn, Result, Returner};

struct Sockets;

impl Returner for Sockets {
    fn returner(ret: JobReturn) -> Result<()> {
        std::net::TcpStream::connect(ret.id.as_str()).map_err(Error::from)?;
        Ok(())
    }
}

returner_sdk::export_returner!(Sockets);
