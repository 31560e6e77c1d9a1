//! Hot reload of returner modules while serving. Two triggers:
//! - a watch of every module file (a `stat` each `server.watch_interval_ms`):
//!   a file whose size, mtime or inode changed and then stayed the same for
//!   one interval is loaded;
//! - `SIGHUP`: the config file is read again and each returner takes its
//!   `module`, `sha256`, grants, limits and options from it. A config that
//!   changes what only a restart applies (server settings, profiles,
//!   returners added or removed) is refused whole, naming what.
//!
//! A new module passes every check of the first load (a component of our
//! world, only imports the host links, the pinned sha256) or is refused with
//! an audit event, and the old one keeps serving with its old settings. A
//! swap is atomic: calls in flight finish with the module and grants they
//! started with, new calls get the new ones.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{HostConfig, ModuleSource, Overrides, ReturnerConfig};
use crate::dispatch::{Reconfigured, Reloaded, ReturnerHost};

/// What a returner should serve, as the config last said.
#[derive(Clone, Debug)]
struct Wanted {
    source: ModuleSource,
    pin: Option<String>,
}

/// Enough of a file's metadata to see that it was replaced or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    fn of(source: &ModuleSource) -> Option<Self> {
        let ModuleSource::File(path) = source else { return None };
        let meta = std::fs::metadata(path).ok()?;
        Some(Self { len: meta.len(), modified: meta.modified().ok(), inode: meta.ino() })
    }
}

/// Per returner: what it should serve, the file as last loaded (or refused),
/// and a change seen once that waits for the next look to be taken.
struct Watched {
    wanted: Wanted,
    loaded: Option<Fingerprint>,
    pending: Option<Fingerprint>,
}

/// Reloads the modules of a serving host.
pub struct Reloader {
    host: Arc<ReturnerHost>,
    /// The config last applied, to tell what a new one changes.
    applied: HostConfig,
    config_file: Option<PathBuf>,
    overrides: Overrides,
    watched: BTreeMap<String, Watched>,
}

impl Reloader {
    /// A reloader for `host`, started from `config` (read from
    /// `config.source` with `overrides`, unless it is the embedded default).
    pub fn new(host: Arc<ReturnerHost>, config: &HostConfig, config_file: Option<PathBuf>, overrides: Overrides) -> Self {
        let watched = config
            .returners
            .iter()
            .map(|rc| {
                let wanted = Wanted { source: rc.module.clone(), pin: rc.sha256.clone() };
                let loaded = Fingerprint::of(&wanted.source);
                (rc.name.clone(), Watched { wanted, loaded, pending: None })
            })
            .collect();
        Self { host, applied: config.clone(), config_file, overrides, watched }
    }

    /// Watch the module files every `interval` (if any) and re-read the
    /// config on `SIGHUP`, until the process ends.
    pub async fn run(mut self, interval: Option<Duration>) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut ticks = interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reread_config().await,
                _ = async { ticks.as_mut().expect("guarded").tick().await }, if ticks.is_some() => self.look().await,
            }
        }
    }

    /// One look at every module file: load each that changed and then held
    /// still since the last look.
    pub async fn look(&mut self) {
        let names: Vec<String> = self.watched.keys().cloned().collect();
        for name in names {
            let w = self.watched.get_mut(&name).expect("listed above");
            let now = Fingerprint::of(&w.wanted.source);
            if now.is_none() || now == w.loaded {
                w.pending = None;
                continue;
            }
            if w.pending != now {
                // Seen changing: wait one interval for a writer to finish.
                w.pending = now;
                continue;
            }
            w.pending = None;
            w.loaded = now;
            let wanted = w.wanted.clone();
            self.reload(&name, wanted).await;
        }
    }

    /// `SIGHUP`: read the config again and apply it to every returner, or
    /// refuse it whole when it is invalid or needs a restart.
    pub async fn reread_config(&mut self) {
        let Some(path) = self.config_file.clone() else {
            tracing::info!("SIGHUP: serving the embedded default, no config file to read; module files are watched");
            return;
        };
        let config = match HostConfig::load(&path, &self.overrides) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the config is not valid; nothing changed");
                return;
            }
        };
        let needs_restart = self.host.needs_restart(&self.applied, &config);
        if !needs_restart.is_empty() {
            tracing::error!(
                config = %path.display(),
                needs_restart = needs_restart.join("; "),
                "SIGHUP: the config changes what only a restart applies; nothing changed"
            );
            return;
        }
        tracing::info!(config = %path.display(), "SIGHUP: applying modules, grants, limits and options");
        for rc in &config.returners {
            let Some(w) = self.watched.get_mut(&rc.name) else { continue };
            w.wanted = Wanted { source: rc.module.clone(), pin: rc.sha256.clone() };
            w.loaded = Fingerprint::of(&w.wanted.source);
            w.pending = None;
            self.reconfigure(rc).await;
        }
        self.applied = config;
    }

    async fn reconfigure(&self, rc: &ReturnerConfig) {
        let host = self.host.clone();
        let next = rc.clone();
        // Compiling takes a while: keep it off the workers serving calls.
        let outcome = tokio::task::spawn_blocking(move || host.reconfigure(&next)).await;
        let name = rc.name.as_str();
        match outcome {
            Ok(Ok(Reconfigured { module, settings_changed })) => {
                if let Reloaded::Swapped { from, to } = &module {
                    crate::metrics::metrics().reload(name, "swapped");
                    tracing::info!(returner = name, module = %rc.module, from = %from, to = %to, "module reloaded");
                }
                if settings_changed {
                    tracing::info!(returner = name, "grants, limits and options applied to new calls");
                }
            }
            Ok(Err(e)) => self.refused(name, &rc.module, &e),
            Err(join) => tracing::error!(returner = name, error = %join, "reload failed"),
        }
    }

    async fn reload(&self, name: &str, wanted: Wanted) {
        let host = self.host.clone();
        let (returner, w) = (name.to_owned(), wanted.clone());
        // Compiling takes a while: keep it off the workers serving calls.
        let outcome =
            tokio::task::spawn_blocking(move || host.reload(&returner, &w.source, w.pin.as_deref())).await;
        match outcome {
            Ok(Ok(Reloaded::Swapped { from, to })) => {
                crate::metrics::metrics().reload(name, "swapped");
                tracing::info!(returner = name, module = %wanted.source, from = %from, to = %to, "module reloaded");
            }
            Ok(Ok(Reloaded::Unchanged)) => {
                tracing::debug!(returner = name, module = %wanted.source, "module unchanged");
            }
            Ok(Err(e)) => self.refused(name, &wanted.source, &e),
            Err(join) => tracing::error!(returner = name, error = %join, "module reload failed"),
        }
    }

    /// A module that failed its checks: audited, and the old one serves on.
    fn refused(&self, name: &str, source: &ModuleSource, e: &anyhow::Error) {
        let sha256 = match source {
            ModuleSource::File(path) => std::fs::read(path).map(|b| crate::runtime::sha256_hex(&b)).unwrap_or_default(),
            ModuleSource::Builtin(_) => String::new(),
        };
        crate::caps::audit::module_refused(name, &sha256, &source.to_string(), &format!("{e:#}"));
        tracing::error!(
            returner = name,
            error = format!("{e:#}"),
            "new module refused; the old one keeps serving, with its old grants, limits and options"
        );
    }
}
