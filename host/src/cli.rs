//! The command line: `serve`, `call`, `inspect`, `check`. Errors are
//! converted once here into one line on stderr and a non-zero exit.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{HostConfig, ModuleSource, Overrides};
use crate::dispatch::{self, ReturnerHost};
use crate::error::ErrorKind;
use crate::runtime::{FUNCTIONS, Returner, Runtime, RuntimeOptions};

/// Runs SaltStack returners as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "returner-host", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. `RUST_LOG=returner_host=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the ingest API. Without --config: the embedded local-cache
    /// returner as `local_cache`, data in ./var, on a unix socket in the data dir.
    Serve {
        /// Host config (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `unix:PATH` or `tcp:127.0.0.1:PORT` (TCP needs a token file).
        #[arg(long)]
        listen: Option<String>,
        /// Where the host keeps compiled modules and the default job cache.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// File holding the bearer token clients must send.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Make one call without a daemon and print the result as JSON.
    Call {
        /// Host config (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data dir (for the embedded default and compiled modules).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Returner name, e.g. `local_cache`.
        returner: String,
        /// Salt's function name, e.g. `get_jid`.
        function: String,
        /// JSON object of the arguments under Salt's names; `-` or absent reads stdin.
        json: Option<String>,
    },
    /// Describe a returner component: its world, the functions it implements, its imports.
    Inspect {
        /// The `.wasm` component.
        module: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config and every module it names.
    Check {
        /// Host config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print Salt's returner module (salt/_returners/wasm.py) under the Salt
    /// name NAME, e.g. `salt-returner wasm_mysql --returner mysql > _returners/wasm_mysql.py`.
    SaltReturner(crate::salt_shim::ShimSettings),
    /// Run the returner contract suite against a module; exit 1 if any case fails.
    Test {
        /// The `.wasm` component.
        module: PathBuf,
        /// Host config giving the grants, options, limits and profiles; without
        /// it, a temporary directory is granted (rw) at /data.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The config's returner whose grants to use (when it has several).
        #[arg(long)]
        returner: Option<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t)]
        format: crate::testkit::Format,
    },
    /// Create a returner crate from the project template.
    New(crate::template::NewArgs),
    /// The spool of a running host: its queues and dead letters.
    Spool {
        /// Host config (TOML) of the running host; without it, the embedded default's socket.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data dir of the embedded default.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        command: crate::spool::admin::SpoolCommand,
    },
}

/// Run the command line; the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::runtime::worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command, cli.log_format));
    crate::audit_log::flush(AUDIT_FLUSH_AT_EXIT);
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long an exiting process waits for its audit lines to reach the disk:
/// long enough for a healthy disk, short enough that a dead one does not
/// hold a shutdown.
const AUDIT_FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Logs on stderr (filtered by `RUST_LOG`), and the audit events also as
/// JSON lines in `audit_log` when set.
fn init_tracing(format: LogFormat, serving: bool, audit_log: Option<&Path>) -> anyhow::Result<()> {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::prelude::*;
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    let stderr = match format {
        LogFormat::Text => stderr.with_filter(filter).boxed(),
        LogFormat::Json => stderr.json().with_filter(filter).boxed(),
    };
    let audit = match audit_log {
        None => None,
        Some(path) => {
            let file = crate::audit_log::AuditLog::open(path)?;
            // The `call` span carries the returner, the function and the module's sha256.
            let only_audit = filter_fn(|meta| {
                meta.target() == crate::caps::audit::TARGET || (meta.is_span() && meta.name() == "call")
            });
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(file)
                    .with_filter(only_audit),
            )
        }
    };
    let _ = tracing_subscriber::registry().with(stderr).with(audit).try_init();
    Ok(())
}

async fn run(command: Command, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, listen, data_dir, token_file } => {
            let overrides = Overrides { listen, data_dir, token_file };
            let config_file = config;
            let config = load_config(config_file.as_deref(), &overrides)?;
            init_tracing(log_format, true, config.server.audit_log.as_deref())?;
            let host = Arc::new(ReturnerHost::start(&config)?);
            let names: Vec<String> = host.names().map(str::to_owned).collect();
            let spool = crate::spool::Spool::open(&config.server.spool_dir(), &names, config.server.spool.clone())?;
            host.attach_spool(spool.clone());
            let delivery = spool.start_delivery(host.clone());
            let reloader = crate::reload::Reloader::new(host.clone(), &config, config_file, overrides);
            let watch = tokio::spawn(reloader.run(config.server.watch_interval));
            let served = crate::ingest::serve(host, &config.server, shutdown_signal()).await;
            watch.abort();
            // No more writes come in; deliver what the spool holds while
            // the drain timeout allows, and keep the rest for the next start.
            spool.stop_accepting();
            delivery.drain_and_stop(&spool, config.server.spool.drain_timeout).await;
            spool.close();
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call { config, data_dir, returner, function, json } => {
            let overrides = Overrides { data_dir, ..Default::default() };
            let config = load_config(config.as_deref(), &overrides)?;
            init_tracing(log_format, false, config.server.audit_log.as_deref())?;
            let body = match json.as_deref() {
                Some("-") | None if !std::io::stdin().is_terminal() => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the arguments from stdin")?;
                    s
                }
                Some("-") | None => String::new(),
                Some(text) => text.to_owned(),
            };
            if config.returner(&returner).is_none() {
                let known: Vec<&str> = config.returners.iter().map(|r| r.name.as_str()).collect();
                anyhow::bail!("no returner `{returner}` in {}; it has: {}", config.source.display(), known.join(", "));
            }
            // Load only the returner asked for: one call should not compile every module.
            let mut only = config.clone();
            only.returners.retain(|r| r.name == returner);
            let host = ReturnerHost::start(&only)?;
            match host.dispatch(&returner, &function, body.as_bytes()).await {
                Ok(result) => {
                    println!("{result}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Inspect { module, json } => {
            init_tracing(log_format, false, None)?;
            inspect(&module, json).await
        }
        Command::Check { config } => {
            init_tracing(log_format, false, None)?;
            check(&config)
        }
        Command::SaltReturner(settings) => crate::salt_shim::print(&settings),
        Command::Test { module, config, returner, format } => {
            init_tracing(log_format, false, None)?;
            crate::testkit::run_cli(crate::testkit::TestOptions { module, config, returner }, format).await
        }
        Command::New(args) => crate::template::create(&args),
        Command::Spool { config, data_dir, command } => {
            init_tracing(log_format, false, None)?;
            let config = load_config(config.as_deref(), &Overrides { data_dir, ..Default::default() })?;
            crate::spool::admin::run(&config, &command)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<HostConfig> {
    Ok(match path {
        Some(p) => HostConfig::load(p, overrides)?,
        None => HostConfig::embedded_default(overrides)?,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Which functions a module implements, found by calling each in an empty
/// sandbox (no grants, no options): one that answers `unsupported` does not
/// implement it; without grants nothing a guest does can have an effect.
async fn inspect(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeOptions { instance_slots: 4, ..Default::default() })?;
    let module = runtime.load_module_file(path)?;
    let info = module.info().clone();
    let config = dispatch::sandbox_config("inspect", ModuleSource::File(path.to_owned()));
    let returner = Returner::new(config, module, Default::default());
    let mut functions = Vec::new();
    for function in FUNCTIONS {
        let call = dispatch::parse_call(function, crate::testkit::probe_args(function).to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("probe arguments of {function}: {e}"))?;
        let status = match returner.call(&runtime, &call).await {
            Ok(_) => "implemented".to_owned(),
            Err(e) if e.kind == ErrorKind::Unsupported => "unsupported".to_owned(),
            Err(e) => format!("implemented (answered {} without grants)", e.kind.as_str()),
        };
        functions.push((function, status));
    }
    let world = info.exports.replace("/returner@", "@");
    if as_json {
        let functions: serde_json::Map<String, serde_json::Value> =
            functions.iter().map(|(f, s)| (f.to_string(), json!(s.starts_with("implemented")))).collect();
        let out = json!({
            "module": path,
            "sha256": info.sha256,
            "world": world,
            "exports": info.exports,
            "functions": functions,
            "batch": info.batch,
            "imports": info.imports,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("module:  {}", path.display());
        println!("sha256:  {}", info.sha256);
        println!("world:   {world} (exports {})", info.exports);
        println!("functions:");
        for (f, s) in &functions {
            println!("  {f:<16} {s}");
        }
        match &info.batch {
            Some(export) => println!("batch:   {export} (consecutive returns are delivered in one call)"),
            None => println!("batch:   not exported (returns are delivered one call each)"),
        }
        println!("imports:");
        for i in &info.imports {
            println!("  {i}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = HostConfig::load(path, &Overrides::default())?;
    let host = ReturnerHost::start(&config)?;
    println!("{}: ok, listen {}", path.display(), config.server.listen);
    for rc in &config.returners {
        let Some(r) = host.returner(&rc.name) else { continue };
        let grants = rc.grants.describe();
        println!(
            "  returner {}: {} sha256 {} exports {}; grants: {}",
            rc.name,
            rc.module,
            &r.module().info().sha256[..12],
            r.module().info().exports,
            if grants.is_empty() { "none".to_owned() } else { grants.join(", ") }
        );
    }
    Ok(ExitCode::SUCCESS)
}
