//! The WASI a returner gets: clocks, random, stdio, an empty environment and
//! no arguments (what `wasm32-wasip2`'s standard library imports), the
//! filesystem, which holds only what an `fs` grant preopens (its `types`
//! interface from `caps::fs`, which keeps the grant's quota), and inert
//! sockets: CPython's libc (componentize-py) imports `wasi:sockets` whether
//! or not a returner uses them, so they are linked, but creating a TCP or
//! UDP socket answers `access-denied` (audited) before any host socket
//! exists, and [`deny_network`] turns name lookups off.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
use wasmtime_wasi::{WasiCtxBuilder, WasiView};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets};
use wasmtime_wasi::p2::{SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::random::WasiRandom;

/// The WASI interfaces [`add_to_linker`] links, without versions (any
/// `0.2.x` is accepted). Keep in step with it.
pub const INTERFACES: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
];

/// No network for a guest, also behind the denied socket creation below:
/// TCP, UDP and name lookups are off in every call's WASI context.
pub fn deny_network(wasi: &mut WasiCtxBuilder) {
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
}

/// Whose socket creations to deny and audit.
pub(super) struct NetworkCtx {
    returner: Arc<str>,
}

impl NetworkCtx {
    pub(super) fn new(returner: Arc<str>) -> Self {
        Self { returner }
    }

    /// The guest asked for a socket: no grant gives one.
    fn deny(&self, operation: &str, family: IpAddressFamily) -> wasmtime_wasi::p2::SocketError {
        let family = match family {
            IpAddressFamily::Ipv4 => "ipv4",
            IpAddressFamily::Ipv6 => "ipv6",
        };
        super::audit::denied(&self.returner, "network", operation, family);
        ErrorCode::AccessDenied.into()
    }
}

struct HasNetwork;
impl HasData for HasNetwork {
    type Data<'a> = &'a mut NetworkCtx;
}

// The socket constructors' error type goes through `network`'s conversion;
// the `network` interface itself is linked from wasmtime-wasi, so only the
// conversion of this impl is ever called.
impl sockets::network::Host for &mut NetworkCtx {
    fn convert_error_code(&mut self, error: wasmtime_wasi::p2::SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(&mut self, _: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        Err(wasmtime::Error::msg("network-error-code is linked from wasmtime-wasi"))
    }
}

impl sockets::network::HostNetwork for &mut NetworkCtx {
    fn drop(&mut self, _: Resource<sockets::network::Network>) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg("network resources are linked from wasmtime-wasi"))
    }
}

impl sockets::tcp_create_socket::Host for &mut NetworkCtx {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        Err(self.deny("create-tcp-socket", family))
    }
}

impl sockets::udp_create_socket::Host for &mut NetworkCtx {
    async fn create_udp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        Err(self.deny("create-udp-socket", family))
    }
}

struct HasIo;
impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link the WASI interfaces above, asynchronously.
pub fn add_to_linker<T: WasiView + super::CapsView + super::fs::QuotaFsView + 'static>(
    l: &mut Linker<T>,
) -> wasmtime::Result<()> {
    io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    super::fs::add_to_linker(l)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    sockets::network::add_to_linker::<T, WasiSockets>(l, &Default::default(), T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<T, HasNetwork>(l, |t| &mut t.caps().network)?;
    sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::udp_create_socket::add_to_linker::<T, HasNetwork>(l, |t| &mut t.caps().network)?;
    Ok(())
}
