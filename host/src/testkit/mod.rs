//! `returner-host test`: the contract suite a returner author runs in CI.
//! It loads one module under the grants, options and limits of a host
//! config (or a temporary directory grant), replays real Salt payloads
//! through it in-process, and checks what Salt's master, its jobs runner and
//! `--return` rely on; each case names the rule it checks (see
//! [`cases`]), and the report is human text, JUnit XML or JSON.

mod cases;
mod jid;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

pub use cases::{Rule, probe_args};
pub use report::{CaseResult, Format, Outcome, Report};

use crate::caps::Backends;
use crate::caps::fs::{FsGrant, FsMode};
use crate::config::{HostConfig, ModuleSource, Overrides, ReturnerConfig};
use crate::dispatch;
use crate::error::{CallError, ErrorKind};
use crate::runtime::{FUNCTIONS, RETURNER_BATCH, Returner, Runtime, RuntimeOptions};

/// Instance slots of the suite's runtime: the concurrency cases and the probe.
const INSTANCE_SLOTS: u32 = 40;

/// What to test, and how.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// The `.wasm` component under test.
    pub module: PathBuf,
    /// A host config giving the grants, options, limits and profiles;
    /// without one, the module gets a fresh temporary directory as its `fs`
    /// grant (`rw`) and default limits.
    pub config: Option<PathBuf>,
    /// Which `[returners.NAME]` of the config to take the grants from; may be
    /// left out when the config has one returner or one whose module is `module`.
    pub returner: Option<String>,
}

/// Run the suite and print the report in `format`; the exit code is
/// non-zero when any case failed.
pub async fn run_cli(options: TestOptions, format: Format) -> anyhow::Result<ExitCode> {
    let mut progress = report::Progress::new(format);
    let report = run(&options, &mut progress).await?;
    report.print(format)?;
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What the caller of [`run`] hears as the suite goes.
pub trait Observer {
    /// The module is loaded: what is tested, under which grants, and which
    /// functions it implements.
    fn start(&mut self, report: &Report, implemented: &[&str]);
    /// A case finished.
    fn case(&mut self, case: &CaseResult);
}

/// Run the suite, telling `observer` as it goes.
pub async fn run(options: &TestOptions, observer: &mut impl Observer) -> anyhow::Result<Report> {
    let started = Instant::now();
    let target = Target::prepare(options)?;
    let runtime = Runtime::new(RuntimeOptions {
        compiled_dir: target.compiled_dir.clone(),
        ..RuntimeOptions::for_returners(INSTANCE_SLOTS + target.config.limits.max_concurrency, [&target.config.limits])
    })?;
    let module = runtime.load_module_file(&options.module)?;
    let sha256 = module.info().sha256.clone();
    let probe = Returner::new(
        dispatch::sandbox_config(&target.config.name, ModuleSource::File(options.module.clone())),
        module.clone(),
        Backends::default(),
    );
    let returner = Returner::new(target.config.clone(), module, target.backends.clone());
    let harness = Arc::new(Harness { runtime, returner, probe });
    let implemented = harness.implemented().await;
    let mut report = Report {
        module: options.module.clone(),
        sha256,
        returner: target.config.name.clone(),
        grants: target.describe_grants(),
        cases: Vec::new(),
        elapsed: Duration::ZERO,
    };
    observer.start(&report, &implemented);
    let mut suite = cases::Suite::new(harness, implemented, |case: &CaseResult| observer.case(case));
    suite.run_all().await;
    report.cases = suite.into_results();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The returner under test, as configured, with what keeps its temporary grant alive.
struct Target {
    config: ReturnerConfig,
    backends: Backends,
    compiled_dir: Option<PathBuf>,
    _scratch: Option<tempfile::TempDir>,
}

impl Target {
    fn prepare(options: &TestOptions) -> anyhow::Result<Self> {
        let Some(path) = &options.config else {
            let scratch = tempfile::Builder::new()
                .prefix("returner-host-test")
                .tempdir()
                .context("creating a temporary directory for the fs grant")?;
            let mut config = dispatch::sandbox_config("under_test", ModuleSource::File(options.module.clone()));
            config.grants.fs = Some(FsGrant::new(scratch.path().to_owned(), FsMode::Rw));
            return Ok(Self { config, backends: Backends::default(), compiled_dir: None, _scratch: Some(scratch) });
        };
        let host = HostConfig::load(path, &Overrides::default())?;
        let config = pick_returner(&host, &options.module, options.returner.as_deref())?.clone();
        let backends = Backends::from_profiles(&host.profiles)?;
        Ok(Self { config, backends, compiled_dir: Some(host.server.compiled_dir()), _scratch: None })
    }

    fn describe_grants(&self) -> Vec<String> {
        self.config.grants.describe()
    }
}

/// The config's returner to take grants from: the one named, else the only
/// one, else the one whose module is the file under test.
fn pick_returner<'a>(host: &'a HostConfig, module: &Path, name: Option<&str>) -> anyhow::Result<&'a ReturnerConfig> {
    let names = || host.returners.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = name {
        return host
            .returner(name)
            .with_context(|| format!("no returner `{name}` in {}; it has: {}", host.source.display(), names()));
    }
    if let [only] = host.returners.as_slice() {
        return Ok(only);
    }
    let wanted = module.canonicalize().ok();
    let same_module = |r: &&ReturnerConfig| match &r.module {
        ModuleSource::File(p) => wanted.is_some() && p.canonicalize().ok() == wanted,
        ModuleSource::Builtin(_) => false,
    };
    let mut matching = host.returners.iter().filter(same_module);
    match (matching.next(), matching.next()) {
        (Some(r), None) => Ok(r),
        _ => anyhow::bail!(
            "{} has several returners ({}); say which one's grants to use with --returner NAME",
            host.source.display(),
            names()
        ),
    }
}

/// Calls of the module under test, in Salt's calling convention.
pub(crate) struct Harness {
    runtime: Runtime,
    returner: Returner,
    /// The same module with no grants and no options: what decides which
    /// functions are implemented without any effect on the granted backends.
    probe: Returner,
}

impl Harness {
    /// Call Salt's `function` with `args` (an object under Salt's names).
    pub(crate) async fn call(&self, function: &str, args: Value) -> Result<Value, CallError> {
        let call = dispatch::parse_call(function, args.to_string().as_bytes())?;
        let output = self.returner.call(&self.runtime, &call).await?;
        dispatch::output_to_json(self.returner.name(), function, output)
    }

    /// How many calls the returner may run at once.
    pub(crate) fn max_concurrency(&self) -> u32 {
        self.returner.limits().max_concurrency
    }

    /// Store `rets` (Salt's returns) with one call of the batch export.
    pub(crate) async fn call_batch(&self, rets: &[Value]) -> Result<(), CallError> {
        let mut batch = Vec::with_capacity(rets.len());
        for ret in rets {
            match dispatch::parse_call("returner", serde_json::json!({ "ret": ret }).to_string().as_bytes())? {
                crate::runtime::Call::Returner(ret) => batch.push(ret),
                other => unreachable!("parse_call(\"returner\") made a call of {}", other.function()),
            }
        }
        self.returner.call_batch(&self.runtime, &batch).await
    }

    /// Every function that does not answer `unsupported` in an empty
    /// sandbox, and [`RETURNER_BATCH`] when the module exports batch.
    async fn implemented(&self) -> Vec<&'static str> {
        let mut implemented = Vec::new();
        for function in FUNCTIONS {
            let Ok(call) = dispatch::parse_call(function, cases::probe_args(function).to_string().as_bytes()) else {
                continue;
            };
            match self.probe.call(&self.runtime, &call).await {
                Err(e) if e.kind == ErrorKind::Unsupported => {}
                _ => implemented.push(function),
            }
        }
        if self.probe.supports_batch() {
            implemented.push(RETURNER_BATCH);
        }
        implemented
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grants_come_from_the_named_the_only_or_the_same_module_returner() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.wasm", "b.wasm"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let config = |text: &str| HostConfig::parse(text, Path::new("test.toml"), dir.path(), &Overrides::default()).unwrap();

        let one = config("[returners.a]\nmodule = \"a.wasm\"\n");
        assert_eq!(pick_returner(&one, Path::new("/elsewhere/x.wasm"), None).unwrap().name, "a");

        let two = config("[returners.a]\nmodule = \"a.wasm\"\n[returners.b]\nmodule = \"b.wasm\"\n");
        assert_eq!(pick_returner(&two, Path::new("x.wasm"), Some("b")).unwrap().name, "b");
        assert_eq!(pick_returner(&two, &dir.path().join("./b.wasm"), None).unwrap().name, "b");
        let err = pick_returner(&two, Path::new("/nonexistent/x.wasm"), None).unwrap_err().to_string();
        assert!(err.contains("several returners (a, b)") && err.contains("--returner NAME"), "{err}");
        let err = pick_returner(&two, Path::new("x.wasm"), Some("c")).unwrap_err().to_string();
        assert!(err.contains("no returner `c`") && err.contains("a, b"), "{err}");
    }
}
