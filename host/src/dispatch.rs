//! Dispatch: the loaded returners by name, and the translation between Salt's
//! calling convention (a function name and a JSON object of its arguments
//! under Salt's parameter names) and typed calls of the guest.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::bindings::{Event, JobReturn};
use crate::builtin;
use crate::caps::Backends;
use crate::config::{HostConfig, ModuleSource, ReturnerConfig};
use crate::error::{CallError, ErrorKind};
use crate::runtime::{Call, FUNCTIONS, Module, Output, Returner, Runtime, RuntimeOptions};

/// Instance slots kept beside the returners' own for the host's needs.
const SPARE_INSTANCE_SLOTS: u32 = 8;

/// The runtime and every loaded returner.
pub struct ReturnerHost {
    runtime: Runtime,
    /// Each returner behind a lock held only to clone or swap the `Arc`: a
    /// call keeps the module it started on, a reload swaps in the next one.
    returners: BTreeMap<String, RwLock<Arc<Returner>>>,
    /// Component instances the engine's pool was sized for at start.
    instance_slots: u32,
    /// The largest linear memory the engine's pool was sized for at start.
    max_memory_bytes: usize,
    /// Core instances and memories one component instance may hold in the
    /// engine's pool, as sized at start.
    per_component: (u32, u32),
    /// The spool, when this host serves through one (the daemon does; a
    /// one-off `returner-host call` does not).
    spool: OnceLock<Arc<crate::spool::Spool>>,
    /// Fan-out names and their returners (`fan_out = [...]`).
    fan_out: BTreeMap<String, Vec<String>>,
}

/// What [`ReturnerHost::reconfigure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconfigured {
    /// What became of the module.
    pub module: Reloaded,
    /// Whether its grants, limits or options changed.
    pub settings_changed: bool,
}

/// What [`ReturnerHost::reload`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The module is the one already serving (same sha256).
    Unchanged,
    /// New calls now go to the module with sha256 `to`.
    Swapped {
        /// The sha256 of the module that served until now.
        from: String,
        /// The sha256 of the module serving from now on.
        to: String,
    },
}

impl ReturnerHost {
    /// Build the runtime for `config` and load every returner's module.
    pub fn start(config: &HostConfig) -> anyhow::Result<Self> {
        let compiled_dir = config.server.compiled_dir();
        crate::config::create_private_dir(&compiled_dir).with_context(|| format!("creating {}", compiled_dir.display()))?;
        let pool = pool_sizing(config);
        let (instance_slots, max_memory_bytes) = (pool.instance_slots, pool.max_memory_bytes);
        let per_component = (pool.instances_per_component, pool.memories_per_component);
        let runtime = Runtime::new(RuntimeOptions { compiled_dir: Some(compiled_dir), ..pool })?;
        let backends = Backends::from_profiles(&config.profiles)?;
        let mut returners = BTreeMap::new();
        for rc in &config.returners {
            let module = load(&runtime, &rc.module)
                .and_then(|m| check_pin(rc, m))
                .with_context(|| format!("returner `{}` ({})", rc.name, rc.module))?;
            tracing::info!(returner = %rc.name, module = %rc.module, sha256 = %module.info().sha256, "loaded");
            crate::metrics::metrics().declare_returner(&rc.name, &crate::runtime::FUNCTIONS);
            let returner = Arc::new(Returner::new(rc.clone(), module, backends.clone()));
            returners.insert(rc.name.clone(), RwLock::new(returner));
        }
        let fan_out = config.fan_out.clone();
        Ok(Self { runtime, returners, instance_slots, max_memory_bytes, per_component, spool: OnceLock::new(), fan_out })
    }

    /// Serve writes through `spool` from now on: they are acknowledged once
    /// on disk and delivered by its delivery tasks, and reads wait for the
    /// writes accepted before them.
    pub fn attach_spool(&self, spool: Arc<crate::spool::Spool>) {
        let _ = self.spool.set(spool);
    }

    /// The spool, if writes go through one.
    pub fn spool(&self) -> Option<&Arc<crate::spool::Spool>> {
        self.spool.get()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Names of the loaded returners.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.returners.keys().map(String::as_str)
    }

    /// The returner called `name`, as it serves now.
    pub fn returner(&self, name: &str) -> Option<Arc<Returner>> {
        let slot = self.returners.get(name)?;
        Some(slot.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }

    /// Load `source` for returner `name` and, if it passes every check the
    /// first load did (a component of our world, only known imports, the
    /// `pin` if any), make it serve new calls; calls in flight finish on the
    /// module they started on. On any error the current module stays.
    /// Compiles: run it off the async workers.
    pub fn reload(&self, name: &str, source: &ModuleSource, pin: Option<&str>) -> anyhow::Result<Reloaded> {
        let slot = self.returners.get(name).with_context(|| format!("no returner `{name}` is loaded"))?;
        let current = slot.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut rc = current.config().clone();
        rc.module = source.clone();
        rc.sha256 = pin.map(str::to_owned);
        let module = load(&self.runtime, source)
            .and_then(|m| check_pin(&rc, m))
            .with_context(|| format!("returner `{name}` ({source})"))?;
        let from = current.module().info().sha256.clone();
        let to = module.info().sha256.clone();
        if from == to && current.config().module == rc.module && current.config().sha256 == rc.sha256 {
            return Ok(Reloaded::Unchanged);
        }
        let next = Arc::new(current.next(module, rc));
        *slot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(if from == to { Reloaded::Unchanged } else { Reloaded::Swapped { from, to } })
    }

    /// What in `next` differs from `current` (the config this host serves)
    /// in ways only a restart applies: the server settings, the profiles
    /// (their connections are made at start), the set of returners, and
    /// limits past what the engine's instance pool was sized for. Empty
    /// when [`ReturnerHost::reconfigure`] can apply `next`.
    pub fn needs_restart(&self, current: &HostConfig, next: &HostConfig) -> Vec<String> {
        let mut needs = Vec::new();
        let (a, b) = (&current.server, &next.server);
        for (key, same) in [
            ("server.listen", a.listen == b.listen),
            ("server.token_file", a.token_file == b.token_file),
            ("server.data_dir", a.data_dir == b.data_dir),
            ("server.max_body_bytes", a.max_body_bytes == b.max_body_bytes),
            ("server.audit_log", a.audit_log == b.audit_log),
            ("server.watch_interval_ms", a.watch_interval == b.watch_interval),
            ("server.instance_slots", a.instance_slots == b.instance_slots),
        ] {
            if !same {
                needs.push(format!("{key} changed"));
            }
        }
        // Profiles hold credentials and have no equality of their own; their
        // Debug text shows every setting (and no secret: those are in files).
        let profiles = |c: &HostConfig| -> BTreeMap<String, String> {
            c.profiles.iter().map(|(name, p)| (name.clone(), format!("{p:?}"))).collect()
        };
        let (pa, pb) = (profiles(current), profiles(next));
        for name in pa.keys().chain(pb.keys()).collect::<std::collections::BTreeSet<_>>() {
            match (pa.get(name), pb.get(name)) {
                (Some(_), None) => needs.push(format!("profile `{name}` removed")),
                (None, Some(_)) => needs.push(format!("profile `{name}` added")),
                (Some(x), Some(y)) if x != y => needs.push(format!("profile `{name}` changed")),
                _ => {}
            }
        }
        if current.fan_out != next.fan_out {
            needs.push("a fan_out changed".into());
        }
        for rc in &next.returners {
            if current.returner(&rc.name).is_none() {
                needs.push(format!("returner `{}` added", rc.name));
            }
        }
        for rc in &current.returners {
            if next.returner(&rc.name).is_none() {
                needs.push(format!("returner `{}` removed", rc.name));
            }
        }
        let pool = pool_sizing(next);
        let slots = pool.instance_slots;
        if slots > self.instance_slots {
            needs.push(format!(
                "the returners' max_concurrency adds up to {} instance slots, over the {} the host was started with",
                slots, self.instance_slots
            ));
        }
        let (instances, memories) = self.per_component;
        if pool.instances_per_component > instances {
            needs.push(format!("a limits.instances over the largest the host was started with ({instances})"));
        }
        if pool.memories_per_component > memories {
            needs.push(format!("a limits.memories over the largest the host was started with ({memories})"));
        }
        if pool.max_memory_bytes > self.max_memory_bytes {
            needs.push(format!(
                "a memory_mib over the largest the host was started with ({} MiB)",
                self.max_memory_bytes / (1024 * 1024)
            ));
        }
        needs
    }

    /// Make returner `rc.name` serve new calls with everything `rc` says:
    /// its module (loaded and checked as at start), grants, limits and
    /// options. Calls in flight finish with what they started with. On any
    /// error nothing changes. Compiles: run it off the async workers.
    pub fn reconfigure(&self, rc: &ReturnerConfig) -> anyhow::Result<Reconfigured> {
        let name = &rc.name;
        let slot = self.returners.get(name).with_context(|| format!("no returner `{name}` is loaded"))?;
        let module = load(&self.runtime, &rc.module)
            .and_then(|m| check_pin(rc, m))
            .with_context(|| format!("returner `{name}` ({})", rc.module))?;
        let mut serving = slot.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (from, to) = (serving.module().info().sha256.clone(), module.info().sha256.clone());
        let settings_changed = settings_differ(serving.config(), rc);
        *serving = Arc::new(serving.next(module, rc.clone()));
        let module = if from == to { Reloaded::Unchanged } else { Reloaded::Swapped { from, to } };
        Ok(Reconfigured { module, settings_changed })
    }

    /// Run Salt's `function` of returner `name` with `body`, a JSON object
    /// of its arguments under Salt's parameter names.
    pub async fn dispatch(&self, name: &str, function: &str, body: &[u8]) -> Result<Value, CallError> {
        let targets = self.targets(name)?;
        let call = parse_call(function, body)?;
        let first = &targets[0];
        if crate::spool::is_write(function) {
            if let Some(spool) = self.spool.get() {
                spool.accept(&self.runtime, &targets, function, body).await?;
                return Ok(Value::Null);
            }
            // Without a spool (`returner-host call`): each returner in turn,
            // stopping at the first error, as Salt's multi_returner does.
            for target in &targets {
                target.call(&self.runtime, &call).await?;
            }
            return Ok(Value::Null);
        }
        if function == "clean_old_jobs" {
            for target in &targets {
                target.call(&self.runtime, &call).await?;
            }
            return Ok(Value::Null);
        }
        // Reads go to the first returner, which holds every write.
        if let Some(spool) = self.spool.get()
            && function.starts_with("get_")
        {
            spool.barrier(first.name(), Instant::now() + first.limits().deadline).await?;
        }
        let output = first.call(&self.runtime, &call).await?;
        output_to_json(name, function, output)
    }

    /// The returners Salt's `name` stands for: its own, or its `fan_out`'s.
    fn targets(&self, name: &str) -> Result<Vec<Arc<Returner>>, CallError> {
        let names: Vec<&str> = match self.fan_out.get(name) {
            Some(targets) => targets.iter().map(String::as_str).collect(),
            None => vec![name],
        };
        names
            .into_iter()
            .map(|n| {
                self.returner(n).ok_or_else(|| {
                    let known: Vec<&str> = self.names().chain(self.fan_out.keys().map(String::as_str)).collect();
                    CallError::new(ErrorKind::NotFound, format!("no returner `{name}`; this host serves: {}", known.join(", ")))
                })
            })
            .collect()
    }
}

/// The engine's pool as `config` needs it: `server.instance_slots`, or the
/// returners' `max_concurrency` summed plus a spare few, each slot with room
/// for the largest limits of any returner.
fn pool_sizing(config: &HostConfig) -> RuntimeOptions {
    let slots = config.server.instance_slots.unwrap_or_else(|| {
        config.returners.iter().map(|r| r.limits.max_concurrency).sum::<u32>() + SPARE_INSTANCE_SLOTS
    });
    RuntimeOptions::for_returners(slots, config.returners.iter().map(|r| &r.limits))
}

/// Whether the grants, limits or options of `a` and `b` differ. Grants have
/// no equality of their own; their Debug text shows every field.
fn settings_differ(a: &ReturnerConfig, b: &ReturnerConfig) -> bool {
    a.limits != b.limits || a.options != b.options || format!("{:?}", a.grants) != format!("{:?}", b.grants)
}

/// Load a module from its source.
pub fn load(runtime: &Runtime, source: &ModuleSource) -> anyhow::Result<Module> {
    match source {
        ModuleSource::File(path) => runtime.load_module_file(path),
        ModuleSource::Builtin(name) => {
            let bytes = builtin::module(name).with_context(|| format!("no builtin module `{name}`"))?;
            runtime.load_module(bytes)
        }
    }
}

/// Refuse a module whose sha256 is not the one the config pins.
fn check_pin(rc: &ReturnerConfig, module: Module) -> anyhow::Result<Module> {
    match &rc.sha256 {
        Some(pin) if *pin != module.info().sha256 => anyhow::bail!(
            "the module's sha256 is {}, but returners.{}.sha256 pins {pin}; refusing it",
            module.info().sha256,
            rc.name
        ),
        _ => Ok(module),
    }
}

/// A returner config for a module with no grants, default limits and no
/// options: what `inspect` probes with.
pub fn sandbox_config(name: &str, module: ModuleSource) -> ReturnerConfig {
    ReturnerConfig {
        name: name.to_owned(),
        module,
        options: Arc::default(),
        limits: Default::default(),
        grants: Default::default(),
        sha256: None,
    }
}

/// Parse Salt's arguments of `function` into a typed call.
pub fn parse_call(function: &str, body: &[u8]) -> Result<Call, CallError> {
    let Some(function) = FUNCTIONS.iter().copied().find(|f| *f == function) else {
        return Err(CallError::new(
            ErrorKind::NotFound,
            format!("no returner function `{function}`; expected one of: {}", FUNCTIONS.join(", ")),
        ));
    };
    let map = if body.iter().all(u8::is_ascii_whitespace) {
        BTreeMap::new()
    } else {
        match serde_json::from_slice::<BTreeMap<String, &RawValue>>(body) {
            Ok(map) => map,
            // Why, from the whole value: off the common path.
            Err(e) => match serde_json::from_slice::<Value>(body) {
                Ok(other) => {
                    return Err(CallError::bad_request(format!(
                        "the body of {function} must be a JSON object of its arguments, got {}",
                        type_name(&other)
                    )));
                }
                Err(_) => return Err(CallError::bad_request(format!("the body of {function} is not valid JSON: {e}"))),
            },
        }
    };
    let mut a = Args { function, map, asked: Vec::new() };
    let call = match function {
        "returner" => Call::Returner(a.job_return("ret")?),
        "save_load" => Call::SaveLoad {
            jid: a.string("jid")?,
            load: a.required_raw("load")?.get().to_owned(),
            minions: a.opt_strings("minions")?,
        },
        "get_load" => Call::GetLoad { jid: a.string("jid")? },
        "get_jid" => Call::GetJid { jid: a.string("jid")? },
        "get_fun" => Call::GetFun { fun: a.string("fun")? },
        "get_jids" => Call::GetJids,
        "get_jids_filter" => Call::GetJidsFilter {
            count: a.count("count")?,
            filter_find_job: a.opt_bool("filter_find_job")?.unwrap_or(true),
        },
        "get_minions" => Call::GetMinions,
        "prep_jid" => Call::PrepJid {
            nocache: a.opt_bool("nocache")?.unwrap_or(false),
            passed_jid: a.opt_string("passed_jid")?,
        },
        "save_minions" => Call::SaveMinions {
            jid: a.string("jid")?,
            minions: a.opt_strings("minions")?.ok_or_else(|| a.missing("minions"))?,
            syndic_id: a.opt_string("syndic_id")?,
        },
        "clean_old_jobs" => Call::CleanOldJobs,
        "event_return" => Call::EventReturn { events: a.events("events")? },
        "update_endtime" => Call::UpdateEndtime { jid: a.string("jid")?, time: a.string("time")? },
        "get_endtime" => Call::GetEndtime { jid: a.string("jid")? },
        _ => unreachable!("FUNCTIONS and this match list the same names"),
    };
    a.finish()?;
    Ok(call)
}

/// Salt's shape of a call's result.
pub fn output_to_json(returner: &str, function: &str, output: Output) -> Result<Value, CallError> {
    Ok(match output {
        Output::Unit => Value::Null,
        Output::Json(text) => serde_json::from_str(&text).map_err(|e| {
            CallError::new(
                ErrorKind::BadOutput,
                format!("returner `{returner}` answered {function} with invalid JSON: {e}"),
            )
        })?,
        Output::Strings(list) => Value::from(list),
        Output::String(s) => Value::String(s),
        // Salt's get_endtime answers False for an unknown jid.
        Output::OptionalString(s) => s.map(Value::String).unwrap_or(Value::Bool(false)),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The arguments of one call, taken one by one so the errors can name them.
/// Each is kept as its JSON text until taken: a job return or a load goes
/// to the guest as the text Salt sent, checked but never rebuilt.
struct Args<'a> {
    function: &'static str,
    map: BTreeMap<String, &'a RawValue>,
    asked: Vec<&'static str>,
}

/// A JSON text already checked by the parse that split it out.
fn value_of(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Whether a JSON text is `null`.
fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

impl<'a> Args<'a> {
    fn take_raw(&mut self, key: &'static str) -> Option<&'a RawValue> {
        self.asked.push(key);
        self.map.remove(key).filter(|raw| !is_null(raw))
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.take_raw(key).map(value_of)
    }

    fn required_raw(&mut self, key: &'static str) -> Result<&'a RawValue, CallError> {
        self.take_raw(key).ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> CallError {
        CallError::bad_request(format!("{} needs the argument `{key}`", self.function))
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> CallError {
        CallError::bad_request(format!(
            "argument `{key}` of {} must be {expected}, got {}",
            self.function,
            type_name(got)
        ))
    }

    fn required(&mut self, key: &'static str) -> Result<Value, CallError> {
        self.take(key).ok_or_else(|| self.missing(key))
    }

    fn string(&mut self, key: &'static str) -> Result<String, CallError> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong(key, "a string", &other)),
        }
    }

    fn opt_string(&mut self, key: &'static str) -> Result<Option<String>, CallError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string or null", &other)),
        }
    }

    fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, CallError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong(key, "a boolean", &other)),
        }
    }

    fn count(&mut self, key: &'static str) -> Result<u32, CallError> {
        let v = self.required(key)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.wrong(key, "a whole number from 0 to 4294967295", &v))
    }

    fn opt_strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>, CallError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(self.wrong(key, "a list of strings", &other)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", &other)),
        }
    }

    fn events(&mut self, key: &'static str) -> Result<Vec<Event>, CallError> {
        let list = self.required_raw(key)?;
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(list.get()) else {
            return Err(CallError::bad_request(format!(
                "argument `{key}` of {} must be a list of {{\"tag\", \"data\"}} objects",
                self.function
            )));
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let Some(mut event) = object(item) else {
                    return Err(CallError::bad_request(format!("{key}[{i}] of {} must be an object", self.function)));
                };
                let Some(tag) = event.remove("tag").and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()) else {
                    return Err(CallError::bad_request(format!("{key}[{i}] of {} needs a string `tag`", self.function)));
                };
                let data = event.remove("data").map_or("null", RawValue::get).to_owned();
                Ok(Event { tag, data })
            })
            .collect()
    }

    fn job_return(&mut self, key: &'static str) -> Result<JobReturn, CallError> {
        let raw = self.required_raw(key)?;
        let Some(ret) = object(raw) else {
            return Err(self.wrong(key, "a job return object", &value_of(raw)));
        };
        let string = |name: &str, required: bool| -> Result<String, CallError> {
            match ret.get(name) {
                None => Err(CallError::bad_request(format!(
                    "argument `{key}` of {} needs a string `{name}`",
                    self.function
                ))),
                Some(raw) if !required && is_null(raw) => Ok(String::new()),
                Some(raw) => serde_json::from_str::<String>(raw.get())
                    .map_err(|_| self.wrong(&format!("{key}.{name}"), "a string", &value_of(raw))),
            }
        };
        let text = |name: &str, absent: &str| ret.get(name).map_or(absent, |raw| raw.get()).to_owned();
        Ok(JobReturn {
            id: string("id", true)?,
            jid: string("jid", true)?,
            fun: if ret.contains_key("fun") { string("fun", false)? } else { String::new() },
            fun_args: text("fun_args", "[]"),
            return_: text("return", "null"),
            retcode: ret.get("retcode").and_then(|raw| value_of(raw).as_i64()),
            success: ret.get("success").and_then(|raw| value_of(raw).as_bool()),
            full: raw.get().to_owned(),
        })
    }

    /// Unknown arguments are an error, not silently dropped.
    fn finish(self) -> Result<(), CallError> {
        if let Some(extra) = self.map.keys().next() {
            let expected = if self.asked.is_empty() {
                "it takes no arguments".to_owned()
            } else {
                format!("expected: {}", self.asked.join(", "))
            };
            return Err(CallError::bad_request(format!(
                "unknown argument `{extra}` for {}; {expected}",
                self.function
            )));
        }
        Ok(())
    }
}

/// The members of a JSON object's text, each kept as its text; `None` when
/// The members of a JSON object's text, each kept as its text; `None` when
/// the text is not an object. A key given twice keeps its last value, as
/// when the whole object is parsed.
fn object(raw: &RawValue) -> Option<BTreeMap<String, &RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(function: &str, body: &str) -> String {
        parse_call(function, body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn every_function_parses_its_salt_arguments() {
        let cases = [
            ("returner", r#"{"ret": {"id": "m1", "jid": "1", "fun": "test.ping", "return": true}}"#),
            ("save_load", r#"{"jid": "1", "load": {"fun": "x"}, "minions": ["m1"]}"#),
            ("get_load", r#"{"jid": "1"}"#),
            ("get_jid", r#"{"jid": "1"}"#),
            ("get_fun", r#"{"fun": "test.ping"}"#),
            ("get_jids", ""),
            ("get_jids_filter", r#"{"count": 5}"#),
            ("get_minions", "{}"),
            ("prep_jid", r#"{"nocache": false, "passed_jid": null}"#),
            ("save_minions", r#"{"jid": "1", "minions": ["a"], "syndic_id": null}"#),
            ("clean_old_jobs", "{}"),
            ("event_return", r#"{"events": [{"tag": "t", "data": {"a": 1}}]}"#),
            ("update_endtime", r#"{"jid": "1", "time": "2026, Nov 23 08:43:00.320186"}"#),
            ("get_endtime", r#"{"jid": "1"}"#),
        ];
        assert_eq!(cases.len(), FUNCTIONS.len());
        for (function, body) in cases {
            let call = parse_call(function, body.as_bytes()).unwrap_or_else(|e| panic!("{function}: {e}"));
            assert_eq!(call.function(), function);
        }
    }

    #[test]
    fn job_return_keeps_typed_fields_and_full_json() {
        let body = r#"{"ret": {"id": "m1", "jid": "j", "fun": "cmd.run", "fun_args": ["exit 3"], "return": "", "retcode": 3, "success": true, "out": "txt"}}"#;
        let Call::Returner(r) = parse_call("returner", body.as_bytes()).unwrap() else { panic!() };
        assert_eq!((r.id.as_str(), r.jid.as_str(), r.fun.as_str()), ("m1", "j", "cmd.run"));
        assert_eq!(r.fun_args, r#"["exit 3"]"#);
        assert_eq!(r.return_, r#""""#);
        assert_eq!((r.retcode, r.success), (Some(3), Some(true)));
        let full: Value = serde_json::from_str(&r.full).unwrap();
        assert_eq!(full["out"], "txt");
    }

    #[test]
    fn a_return_and_a_load_reach_the_guest_as_the_text_salt_sent() {
        let ret = r#"{"id": "m1", "jid": "j", "return": {"b": 1.50, "a": [1, 2]}, "fun_args": [ ], "id": "m2"}"#;
        let Call::Returner(r) = parse_call("returner", format!(r#"{{"ret": {ret}}}"#).as_bytes()).unwrap() else { panic!() };
        assert_eq!(r.full, ret);
        assert_eq!((r.return_.as_str(), r.fun_args.as_str()), (r#"{"b": 1.50, "a": [1, 2]}"#, "[ ]"));
        // A key given twice: the last, as a parse of the whole return reads it.
        assert_eq!(r.id, "m2");
        assert_eq!(r.fun, "");
        let Call::SaveLoad { load, .. } = parse_call("save_load", br#"{"jid": "j", "load": {"fun" : "x"}}"#).unwrap() else { panic!() };
        assert_eq!(load, r#"{"fun" : "x"}"#);
        let Call::EventReturn { events } = parse_call("event_return", br#"{"events": [{"tag": "t", "data": [1, 2]}, {"tag": "u"}]}"#).unwrap() else {
            panic!()
        };
        assert_eq!(events.iter().map(|e| (e.tag.as_str(), e.data.as_str())).collect::<Vec<_>>(), [("t", "[1, 2]"), ("u", "null")]);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(err("nope", "{}").contains("no returner function `nope`"));
        assert!(err("get_load", "{").contains("not valid JSON"));
        assert!(err("get_load", "[1]").contains("must be a JSON object"));
        assert!(err("get_load", "{}").contains("needs the argument `jid`"));
        assert!(err("get_load", r#"{"jid": 5}"#).contains("`jid` of get_load must be a string, got a number"));
        assert!(err("get_load", r#"{"jid": "1", "x": 1}"#).contains("unknown argument `x` for get_load; expected: jid"));
        assert!(err("get_jids", r#"{"x": 1}"#).contains("it takes no arguments"));
        assert!(err("get_jids_filter", r#"{"count": -1}"#).contains("whole number"));
        assert!(err("returner", r#"{"ret": {"jid": "1"}}"#).contains("needs a string `id`"));
        assert!(err("event_return", r#"{"events": [{"data": 1}]}"#).contains("events[0] of event_return needs a string `tag`"));
        assert!(err("event_return", r#"{"events": [1]}"#).contains("events[0] of event_return must be an object"));
        assert!(err("event_return", r#"{"events": {"tag": "t"}}"#).contains("`events` of event_return must be a list"));
        assert!(err("returner", r#"{"ret": [1]}"#).contains("`ret` of returner must be a job return object, got an array"));
        assert!(err("returner", r#"{"ret": {"id": "m", "jid": "1", "fun": 3}}"#).contains("`ret.fun` of returner must be a string, got a number"));
        assert!(err("returner", r#"{"ret": {"id": null, "jid": "1"}}"#).contains("`ret.id` of returner must be a string, got null"));
        assert!(err("save_load", r#"{"jid": "1", "load": null}"#).contains("save_load needs the argument `load`"));
    }

    #[test]
    fn endtime_none_is_false_as_in_salt() {
        assert_eq!(output_to_json("r", "get_endtime", Output::OptionalString(None)).unwrap(), Value::Bool(false));
        let bad = output_to_json("r", "get_load", Output::Json("{".into())).unwrap_err();
        assert_eq!(bad.kind, ErrorKind::BadOutput);
    }
}
