//! A hostile fixture: its `returner` opens a TCP connection to the address
//! in the return's `id`. The host links `wasi:sockets` (CPython's libc
//! imports them) but denies every socket, so the connection must fail with
//! an error value and never reach the address.

use returner_sdk::{Error, JobReturn, Result, Returner};

struct Sockets;

impl Returner for Sockets {
    fn returner(ret: JobReturn) -> Result<()> {
        std::net::TcpStream::connect(ret.id.as_str()).map_err(Error::from)?;
        Ok(())
    }
}

returner_sdk::export_returner!(Sockets);
