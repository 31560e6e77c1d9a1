//! The contract cases. Each checks one rule Salt relies on, named by a
//! stable id so a CI log says which rule a returner broke; cases of
//! functions the module does not implement are skipped (and say so).
//!
//! Payloads are the real ones a Salt 3008 master and minion handed their
//! returners (embedded, so the kit works without this repository), with
//! their jids swapped for fresh ones.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::Harness;
use super::jid::{JidSource, start_time};
use super::report::{CaseResult, Outcome};
use crate::error::ErrorKind;
use crate::runtime::{FUNCTIONS, RETURNER_BATCH};

const MINION_RETURNS: &str = include_str!("salt/minion-returns.jsonl");
const MASTER_CALLS: &str = include_str!("salt/master-job-cache-calls.jsonl");

/// Calls of the concurrency cases at once (fewer when the returner's
/// `max_concurrency` is lower).
const CONCURRENT_CALLS: usize = 8;
/// Size of the synthetic large return: big, yet under etcd's default 1.5 MiB request limit.
const LARGE_RETURN_BYTES: usize = 512 * 1024;

/// One rule of the contract: a stable id and what it says.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Stable id, e.g. `get-load-unknown-jid`.
    pub id: &'static str,
    /// The rule in one sentence.
    pub text: &'static str,
}

const UNSUPPORTED: Rule = Rule {
    id: "unsupported-answer",
    text: "a function the returner does not implement answers `unsupported`, which the host reports as Salt's loader does",
};
const JOB_CACHE_COMPLETE: Rule = Rule {
    id: "job-cache-complete",
    text: "a returner that stores loads can be Salt's master_job_cache: it also implements prep_jid, returner, get_load, get_jid and get_jids",
};
const ENDTIME_PAIR: Rule = Rule {
    id: "endtime-pair",
    text: "update_endtime and get_endtime come together",
};
const RETURNER_ROUND_TRIP: Rule = Rule {
    id: "returner-round-trip",
    text: "a job return stored by `returner` comes back from get_jid as {minion id: {\"return\": the return, ...}}",
};
const MASTER_REPLAY: Rule = Rule {
    id: "master-replay",
    text: "every save_load, returner and event_return call a Salt master made succeeds",
};
const BATCH_ROUND_TRIP: Rule = Rule {
    id: "batch-round-trip",
    text: "job returns stored in one call of the batch export (salt:returner/batch) come back from get_jid as those of `returner` do, and the same batch delivered again succeeds and changes no answer (the host delivers at least once)",
};
const SAVE_LOAD_FIRST_WINS: Rule = Rule {
    id: "save-load-first-wins",
    text: "save_load keeps the first load of a job: a master calls it again with each return, and get_load, get_jids and get_fun need the publish load",
};
const SAVE_LOAD_IDEMPOTENT: Rule = Rule {
    id: "save-load-idempotent",
    text: "save_load of the same load twice succeeds both times and get_load answers it",
};
const GET_LOAD_UNKNOWN: Rule = Rule {
    id: "get-load-unknown-jid",
    text: "get_load of an unknown jid answers {} (not an error): Salt's jobs runner calls it for any jid",
};
const GET_JID_UNKNOWN: Rule = Rule {
    id: "get-jid-unknown-jid",
    text: "get_jid of an unknown jid answers {} (not an error)",
};
const GET_JIDS_SHAPE: Rule = Rule {
    id: "get-jids-shape",
    text: "get_jids answers an object {jid: {Function, Arguments, Target, Target-type, User, StartTime}}, which Salt's jobs.list_jobs iterates as a dict",
};
const GET_JIDS_FILTER_SHAPE: Rule = Rule {
    id: "get-jids-filter-shape",
    text: "get_jids_filter(count, filter_find_job) answers a list of the newest `count` jobs, oldest first, each with JID, without saltutil.find_job jobs when asked",
};
const GET_FUN_LATEST: Rule = Rule {
    id: "get-fun-latest",
    text: "get_fun(fun) answers an object keyed by minion id holding every minion whose latest job ran fun, with its return (or, as Salt's etcd_return, the function's name)",
};
const GET_MINIONS: Rule = Rule {
    id: "get-minions-lists-returners",
    text: "get_minions lists every minion that returned",
};
const PREP_JID_PASSED: Rule = Rule {
    id: "prep-jid-idempotent",
    text: "prep_jid with a passed jid answers that jid, every time",
};
const PREP_JID_NEW: Rule = Rule {
    id: "prep-jid-new",
    text: "prep_jid without a passed jid answers a new jid in Salt's format (20 digits), a different one each call",
};
const ENDTIME_ROUND_TRIP: Rule = Rule {
    id: "endtime-round-trip",
    text: "get_endtime answers what update_endtime stored, and false for an unknown jid",
};
const SAVE_MINIONS: Rule = Rule {
    id: "save-minions",
    text: "save_minions succeeds, with and without a syndic id",
};
const EVENT_RETURN_BATCH: Rule = Rule {
    id: "event-return-batch",
    text: "event_return stores a batch of real Salt events in one call",
};
const UNICODE: Rule = Rule {
    id: "unicode-round-trip",
    text: "returns and loads with non-ASCII text (accents, CJK, emoji, right-to-left, combining marks, control characters) come back unchanged",
};
const LARGE: Rule = Rule {
    id: "large-return-round-trip",
    text: "a large return (512 KiB of text and a 10,000-element list) comes back unchanged",
};
const CONCURRENT_RETURNS: Rule = Rule {
    id: "concurrent-returns",
    text: "returns of many minions for one job, stored at the same time, are all kept",
};
const CONCURRENT_SAVE_LOAD: Rule = Rule {
    id: "concurrent-save-load-one-wins",
    text: "save_load calls racing on one job all succeed, and exactly one of their loads is kept, whole",
};
const CLEAN_OLD_JOBS: Rule = Rule {
    id: "clean-old-jobs-keeps-recent",
    text: "clean_old_jobs succeeds and keeps jobs younger than the retention time",
};

/// Harmless arguments of each function, for finding out which ones a module
/// implements (in a sandbox without grants, so nothing it does has an effect).
pub fn probe_args(function: &str) -> Value {
    let jid = "20000101000000000000";
    match function {
        "returner" => json!({"ret": {"id": "inspect", "jid": jid, "fun": "test.ping", "return": true}}),
        "save_load" => json!({"jid": jid, "load": {}}),
        "get_load" | "get_jid" | "get_endtime" => json!({"jid": jid}),
        "get_fun" => json!({"fun": "test.ping"}),
        "get_jids_filter" => json!({"count": 1}),
        "prep_jid" => json!({"passed_jid": jid}),
        "save_minions" => json!({"jid": jid, "minions": []}),
        "event_return" => json!({"events": []}),
        "update_endtime" => json!({"jid": jid, "time": "2000, Jan 01 00:00:00.000000"}),
        _ => json!({}),
    }
}

type CaseOutcome = Result<(), String>;

/// What earlier cases had the module store, for the cases after them to read back.
#[derive(Default)]
struct Stored {
    /// jid -> the first load saved for it.
    loads: BTreeMap<String, Value>,
    /// (jid, minion id) -> the whole return.
    returns: BTreeMap<(String, String), Value>,
    /// Every minion id that returned.
    minions: BTreeSet<String>,
}

/// A run of the cases against one module.
pub(super) struct Suite<F> {
    h: Arc<Harness>,
    implemented: Vec<&'static str>,
    on_case: F,
    results: Vec<CaseResult>,
    jids: JidSource,
    stored: Stored,
}

impl<F: FnMut(&CaseResult)> Suite<F> {
    pub(super) fn new(h: Arc<Harness>, implemented: Vec<&'static str>, on_case: F) -> Self {
        Self { h, implemented, on_case, results: Vec::new(), jids: JidSource::new(), stored: Stored::default() }
    }

    pub(super) fn into_results(self) -> Vec<CaseResult> {
        self.results
    }

    fn implements(&self, function: &str) -> bool {
        self.implemented.contains(&function)
    }

    /// Run `body` as the case `name` of `rule` when the module implements
    /// every function in `needs`; record and report the outcome.
    async fn case(&mut self, rule: Rule, name: impl Into<String>, needs: &[&str], body: impl Future<Output = CaseOutcome>) {
        let started = Instant::now();
        let missing: Vec<&str> = needs.iter().copied().filter(|f| !self.implements(f)).collect();
        let outcome = if missing.is_empty() {
            match body.await {
                Ok(()) => Outcome::Pass,
                Err(message) => Outcome::Fail(message),
            }
        } else {
            Outcome::Skip(format!("not implemented: {}", missing.join(", ")))
        };
        let result = CaseResult { rule, name: name.into(), outcome, elapsed: started.elapsed() };
        (self.on_case)(&result);
        self.results.push(result);
    }

    pub(super) async fn run_all(&mut self) {
        self.function_set().await;
        self.minion_returns().await;
        self.master_replay().await;
        self.loads().await;
        self.unknown_jids().await;
        self.job_listings().await;
        self.get_fun_and_minions().await;
        self.prep_jid().await;
        self.endtime_minions_events().await;
        self.unicode_and_large().await;
        self.concurrency().await;
        self.clean_old_jobs().await;
        // Last: its fresh jobs are the newest, which earlier cases do not expect.
        self.batch().await;
    }

    async fn function_set(&mut self) {
        let h = self.h.clone();
        let unimplemented: Vec<&'static str> = FUNCTIONS.iter().copied().filter(|f| !self.implements(f)).collect();
        for function in unimplemented {
            let h = h.clone();
            self.case(UNSUPPORTED, format!("{function} answers unsupported"), &[], async move {
                match h.call(function, probe_args(function)).await {
                    Err(e) if e.kind == ErrorKind::Unsupported => Ok(()),
                    Err(e) => Err(format!("{function} answered {} with its grants: {}", e.kind.as_str(), e.message)),
                    Ok(v) => Err(format!(
                        "{function} answered unsupported without grants but {} with them",
                        brief(&v)
                    )),
                }
            })
            .await;
        }
        let outcome = if self.implements("save_load") {
            let needed = ["prep_jid", "returner", "get_load", "get_jid", "get_jids"];
            let missing: Vec<&str> = needed.into_iter().filter(|f| !self.implements(f)).collect();
            if missing.is_empty() { Ok(()) } else { Err(format!("save_load is implemented but not {}", missing.join(", "))) }
        } else {
            Ok(())
        };
        self.case(JOB_CACHE_COMPLETE, "master_job_cache function set", &[], async { outcome }).await;
        let outcome = match (self.implements("update_endtime"), self.implements("get_endtime")) {
            (true, false) => Err("update_endtime is implemented but not get_endtime".to_owned()),
            (false, true) => Err("get_endtime is implemented but not update_endtime".to_owned()),
            _ => Ok(()),
        };
        self.case(ENDTIME_PAIR, "end time function pair", &[], async { outcome }).await;
    }

    async fn minion_returns(&mut self) {
        let lines = fixture(MINION_RETURNS, &mut self.jids);
        let check_jid = self.implements("get_jid");
        for ret in lines {
            let name = format!(
                "{} return of {} ({})",
                ret["fun"].as_str().unwrap_or("?"),
                ret["id"].as_str().unwrap_or("?"),
                size(&ret)
            );
            self.remember_return(&ret);
            let h = self.h.clone();
            self.case(RETURNER_ROUND_TRIP, name, &["returner"], async move {
                store_and_read_back(&h, &ret, check_jid).await
            })
            .await;
        }
    }

    /// A return a later case may expect the module to have stored.
    fn remember_return(&mut self, ret: &Value) {
        let (Some(jid), Some(id)) = (ret["jid"].as_str(), ret["id"].as_str()) else { return };
        if !self.implements("returner") {
            return;
        }
        self.stored.minions.insert(id.to_owned());
        self.stored.returns.insert((jid.to_owned(), id.to_owned()), ret.clone());
    }

    /// A load a later case may expect the module to list (if it stores loads at all).
    fn remember_load(&mut self, jid: &str, load: &Value) {
        if self.implements("save_load") {
            self.stored.loads.insert(jid.to_owned(), load.clone());
        }
    }

    async fn master_replay(&mut self) {
        let calls = fixture(MASTER_CALLS, &mut self.jids);
        let mut later_loads: BTreeMap<String, usize> = BTreeMap::new();
        let mut replayed = Vec::new();
        for mut call in calls {
            let Some(function) = call.as_object_mut().and_then(|c| c.remove("call")) else { continue };
            let function = function.as_str().unwrap_or_default().to_owned();
            if !self.implements(&function) {
                continue;
            }
            match function.as_str() {
                "save_load" => {
                    let jid = call["jid"].as_str().unwrap_or_default().to_owned();
                    if self.stored.loads.contains_key(&jid) {
                        *later_loads.entry(jid).or_default() += 1;
                    } else {
                        self.stored.loads.insert(jid, call["load"].clone());
                    }
                }
                "returner" => self.remember_return(&call["ret"].clone()),
                _ => {}
            }
            replayed.push((function, call));
        }
        let h = self.h.clone();
        let count = replayed.len();
        // With none of the master's functions, the replay is skipped for the first of them.
        let needs: &[&str] = if count == 0 { &["save_load", "returner", "event_return"] } else { &[] };
        self.case(MASTER_REPLAY, format!("{count} calls of a Salt 3008 master"), needs, async move {
            for (i, (function, args)) in replayed.into_iter().enumerate() {
                h.call(&function, args).await.map_err(|e| {
                    format!("call {} of {count}, {function}, answered {}: {}", i + 1, e.kind.as_str(), e.message)
                })?;
            }
            Ok(())
        })
        .await;

        let (h, loads) = (self.h.clone(), self.stored.loads.clone());
        let twice = later_loads.len();
        let name = format!("get_load of {} replayed jobs ({twice} saved again with a return)", loads.len());
        self.case(SAVE_LOAD_FIRST_WINS, name, &["save_load", "get_load"], async move {
            for (jid, first) in &loads {
                let stored = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", jid, &e))?;
                contains(&stored, first).map_err(|why| {
                    let replaced = if later_loads.contains_key(jid) {
                        " (the master saved a second load for this job, with its return: it must not replace the first)"
                    } else {
                        ""
                    };
                    format!("get_load({jid}) {why}{replaced}")
                })?;
            }
            Ok(())
        })
        .await;

        let h = self.h.clone();
        let returns: Vec<Value> = self
            .stored
            .returns
            .iter()
            .filter(|((jid, _), _)| self.stored.loads.contains_key(jid))
            .map(|(_, ret)| ret.clone())
            .collect();
        let name = format!("get_jid of {} replayed returns", returns.len());
        self.case(RETURNER_ROUND_TRIP, name, &["returner", "get_jid"], async move {
            for ret in &returns {
                read_back(&h, ret).await?;
            }
            Ok(())
        })
        .await;
    }

    async fn loads(&mut self) {
        let (h, jid) = (self.h.clone(), self.jids.next());
        let load = publish_load(&jid, "test.ping", "first");
        self.case(SAVE_LOAD_IDEMPOTENT, "the same load saved twice", &["save_load", "get_load"], async move {
            for attempt in ["first", "second"] {
                h.call("save_load", json!({"jid": jid, "load": load, "minions": ["m1"]}))
                    .await
                    .map_err(|e| format!("the {attempt} save_load({jid}) answered {}: {}", e.kind.as_str(), e.message))?;
            }
            let stored = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", &jid, &e))?;
            contains(&stored, &load).map_err(|why| format!("get_load({jid}) {why}"))
        })
        .await;

        let (h, jid) = (self.h.clone(), self.jids.next());
        let first = publish_load(&jid, "test.ping", "first");
        let second = publish_load(&jid, "test.echo", "second");
        self.remember_load(&jid, &first);
        self.case(SAVE_LOAD_FIRST_WINS, "a second, different load of one job", &["save_load", "get_load"], async move {
            for load in [&first, &second] {
                h.call("save_load", json!({"jid": jid, "load": load}))
                    .await
                    .map_err(|e| answered("save_load", &jid, &e))?;
            }
            let stored = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", &jid, &e))?;
            if stored.get("tgt") == second.get("tgt") {
                return Err(format!("save_load overwrote the load of {jid}: get_load answers the second one, {}", brief(&stored)));
            }
            contains(&stored, &first).map_err(|why| format!("get_load({jid}) {why}"))
        })
        .await;
    }

    async fn unknown_jids(&mut self) {
        for (rule, function) in [(GET_LOAD_UNKNOWN, "get_load"), (GET_JID_UNKNOWN, "get_jid")] {
            let (h, jid) = (self.h.clone(), self.jids.next());
            self.case(rule, format!("{function} of a jid never stored"), &[function], async move {
                match h.call(function, json!({"jid": jid})).await {
                    Ok(Value::Object(map)) if map.is_empty() => Ok(()),
                    Ok(other) => Err(format!("{function}({jid}) answered {}, expected {{}}", brief(&other))),
                    Err(e) => Err(format!("{}; expected {{}}", answered(function, &jid, &e))),
                }
            })
            .await;
        }
    }

    async fn job_listings(&mut self) {
        let (h, loads) = (self.h.clone(), self.stored.loads.clone());
        self.case(GET_JIDS_SHAPE, format!("get_jids lists the {} jobs saved", loads.len()), &["get_jids"], async move {
            let jobs = h.call("get_jids", json!({})).await.map_err(|e| answered("get_jids", "", &e))?;
            let Value::Object(jobs) = jobs else {
                return Err(format!(
                    "get_jids answered {}, not an object keyed by jid: Salt's jobs.list_jobs runner indexes it as a dict",
                    brief(&jobs)
                ));
            };
            for (jid, load) in &loads {
                let job = jobs.get(jid).ok_or_else(|| format!("get_jids has no job {jid}, whose load was saved"))?;
                check_summary(jid, job, load).map_err(|why| format!("get_jids[{jid}] {why}"))?;
            }
            Ok(())
        })
        .await;

        let h = self.h.clone();
        let (plain, find_job, newest) = (self.jids.next(), self.jids.next(), self.jids.next());
        let loads = [
            (plain.clone(), publish_load(&plain, "test.ping", "n1")),
            (find_job.clone(), publish_load(&find_job, "saltutil.find_job", "n1")),
            (newest.clone(), publish_load(&newest, "test.echo", "n1")),
        ];
        for (jid, load) in &loads {
            self.remember_load(jid, load);
        }
        let name = "get_jids_filter of the three newest jobs, one a saltutil.find_job";
        self.case(GET_JIDS_FILTER_SHAPE, name, &["get_jids_filter", "save_load"], async move {
            for (jid, load) in &loads {
                h.call("save_load", json!({"jid": jid, "load": load})).await.map_err(|e| answered("save_load", jid, &e))?;
            }
            let by_jid: BTreeMap<&String, &Value> = loads.iter().map(|(j, l)| (j, l)).collect();
            for (filter, want) in [(true, [&plain, &newest]), (false, [&find_job, &newest])] {
                let args = json!({"count": 2, "filter_find_job": filter});
                let jobs = h.call("get_jids_filter", args).await.map_err(|e| answered("get_jids_filter", "", &e))?;
                let call = format!("get_jids_filter(2, filter_find_job={filter})");
                let Value::Array(jobs) = jobs else {
                    return Err(format!("{call} answered {}, not a list", brief(&jobs)));
                };
                let got: Vec<&str> = jobs.iter().map(|j| j["JID"].as_str().unwrap_or("(no JID)")).collect();
                if got != want.map(String::as_str) {
                    return Err(format!("{call} answered the jobs {got:?}, expected {want:?} (the newest 2, oldest first)"));
                }
                for job in &jobs {
                    let jid = job["JID"].as_str().unwrap_or_default().to_owned();
                    check_summary(&jid, job, by_jid[&jid]).map_err(|why| format!("{call}: job {jid} {why}"))?;
                }
            }
            Ok(())
        })
        .await;
    }

    async fn get_fun_and_minions(&mut self) {
        // Each minion's latest return, when its job's load ran the same
        // function: every Salt returner with get_fun lists that minion.
        let mut latest: BTreeMap<String, (String, Value)> = BTreeMap::new();
        for ((jid, id), ret) in &self.stored.returns {
            if latest.get(id).is_none_or(|(newest, _)| jid > newest) {
                latest.insert(id.clone(), (jid.clone(), ret.clone()));
            }
        }
        latest.retain(|_, (jid, ret)| {
            let fun = ret["fun"].as_str();
            fun.is_some() && self.stored.loads.get(jid.as_str()).and_then(|l| l["fun"].as_str()) == fun
        });
        let h = self.h.clone();
        let name = format!("get_fun of the latest function of {} minions", latest.len());
        self.case(GET_FUN_LATEST, name, &["get_fun", "save_load", "returner"], async move {
            for (id, (jid, ret)) in &latest {
                let fun = ret["fun"].as_str().unwrap_or_default();
                let answer = h.call("get_fun", json!({"fun": fun})).await.map_err(|e| answered("get_fun", fun, &e))?;
                let Value::Object(map) = &answer else {
                    return Err(format!("get_fun({fun}) answered {}, not an object keyed by minion id", brief(&answer)));
                };
                let got = map.get(id).ok_or_else(|| format!("get_fun({fun}) has no entry for minion {id}, which returned it in job {jid}"))?;
                // The return (local_cache here), the whole return (Salt's
                // mysql) or the function's name (Salt's etcd_return).
                if got != &ret["return"] && got.get("return") != Some(&ret["return"]) && got != &ret["fun"] {
                    return Err(format!("get_fun({fun})[{id}] is {}, expected the return of job {jid}, {}", brief(got), brief(&ret["return"])));
                }
            }
            Ok(())
        })
        .await;

        let (h, minions) = (self.h.clone(), self.stored.minions.clone());
        self.case(GET_MINIONS, format!("get_minions after returns of {} minions", minions.len()), &["get_minions", "returner"], async move {
            let answer = h.call("get_minions", json!({})).await.map_err(|e| answered("get_minions", "", &e))?;
            let listed: BTreeSet<&str> = answer.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let missing: Vec<&str> = minions.iter().map(String::as_str).filter(|m| !listed.contains(m)).collect();
            if missing.is_empty() { Ok(()) } else { Err(format!("get_minions answered {}, without {missing:?}", brief(&answer))) }
        })
        .await;
    }

    async fn prep_jid(&mut self) {
        let (h, jid) = (self.h.clone(), self.jids.next());
        self.case(PREP_JID_PASSED, "prep_jid with a passed jid, twice", &["prep_jid"], async move {
            for attempt in ["first", "second"] {
                let got = h
                    .call("prep_jid", json!({"passed_jid": jid}))
                    .await
                    .map_err(|e| format!("the {attempt} {}", answered("prep_jid", &jid, &e)))?;
                if got != json!(jid) {
                    return Err(format!("the {attempt} prep_jid(passed_jid={jid}) answered {}", brief(&got)));
                }
            }
            Ok(())
        })
        .await;
        let h = self.h.clone();
        self.case(PREP_JID_NEW, "prep_jid without a jid, twice", &["prep_jid"], async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let got = h.call("prep_jid", json!({})).await.map_err(|e| answered("prep_jid", "", &e))?;
                let jid = got.as_str().unwrap_or_default().to_owned();
                if start_time(&jid).is_none() {
                    return Err(format!("prep_jid answered {}, not a jid in Salt's format %Y%m%d%H%M%S%f", brief(&got)));
                }
                if seen.contains(&jid) {
                    return Err(format!("two prep_jid calls answered the same jid {jid}"));
                }
                seen.push(jid);
            }
            Ok(())
        })
        .await;
    }

    async fn endtime_minions_events(&mut self) {
        let (h, jid, unknown) = (self.h.clone(), self.jids.next(), self.jids.next());
        let time = start_time(&jid).unwrap_or_default();
        self.case(ENDTIME_ROUND_TRIP, "update_endtime then get_endtime", &["update_endtime", "get_endtime"], async move {
            h.call("update_endtime", json!({"jid": jid, "time": time})).await.map_err(|e| answered("update_endtime", &jid, &e))?;
            let got = h.call("get_endtime", json!({"jid": jid})).await.map_err(|e| answered("get_endtime", &jid, &e))?;
            if got != json!(time) {
                return Err(format!("get_endtime({jid}) answered {}, expected {time:?}", brief(&got)));
            }
            match h.call("get_endtime", json!({"jid": unknown})).await {
                Ok(Value::Bool(false)) => Ok(()),
                Ok(other) => Err(format!("get_endtime of the unknown jid {unknown} answered {}, expected false", brief(&other))),
                Err(e) => Err(format!("{}; expected false", answered("get_endtime", &unknown, &e))),
            }
        })
        .await;

        let (h, jid) = (self.h.clone(), self.jids.next());
        self.case(SAVE_MINIONS, "save_minions of a job, then from a syndic", &["save_minions"], async move {
            h.call("save_minions", json!({"jid": jid, "minions": ["m1", "n1"]})).await.map_err(|e| answered("save_minions", &jid, &e))?;
            let args = json!({"jid": jid, "minions": ["s1"], "syndic_id": "syndic1"});
            h.call("save_minions", args).await.map_err(|e| format!("with syndic_id: {}", answered("save_minions", &jid, &e)))?;
            Ok(())
        })
        .await;

        let events: Vec<Value> = fixture(MASTER_CALLS, &mut self.jids)
            .into_iter()
            .filter(|c| c["call"] == "event_return")
            .flat_map(|c| c["events"].as_array().cloned().unwrap_or_default())
            .collect();
        let h = self.h.clone();
        self.case(EVENT_RETURN_BATCH, format!("event_return of {} events at once", events.len()), &["event_return"], async move {
            h.call("event_return", json!({"events": events})).await.map(|_| ()).map_err(|e| answered("event_return", "", &e))
        })
        .await;
    }

    async fn unicode_and_large(&mut self) {
        let check_jid = self.implements("get_jid");
        let jid = self.jids.next();
        let text = "ünïcödé ✓ 日本語 🦀🎉 مرحبا e\u{301} tab\t nl\n quote\" backslash\\ bell\u{7}";
        let ret = json!({
            "id": "m1", "jid": jid, "fun": "test.echo", "fun_args": [text],
            "return": {"ключ": "值 ✓", "emoji": "🦀🎉", "text": text, "list": [text, {"ñ": null}]},
            "retcode": 0, "success": true,
        });
        let load = publish_load(&jid, "test.echo", text);
        let can_load = self.implements("save_load") && self.implements("get_load");
        self.remember_return(&ret);
        self.remember_load(&jid, &load);
        let h = self.h.clone();
        self.case(UNICODE, "a return and a load in many scripts", &["returner"], async move {
            store_and_read_back(&h, &ret, check_jid).await?;
            if can_load {
                h.call("save_load", json!({"jid": jid, "load": load})).await.map_err(|e| answered("save_load", &jid, &e))?;
                let stored = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", &jid, &e))?;
                contains(&stored, &load).map_err(|why| format!("get_load({jid}) {why}"))?;
            }
            Ok(())
        })
        .await;

        let line = "the quick brown fox ✓ jumps over the lazy dog 0123456789\n";
        let big = line.repeat(LARGE_RETURN_BYTES / line.len());
        let ret = json!({
            "id": "m1", "jid": self.jids.next(), "fun": "cmd.run", "fun_args": ["cat big"],
            "return": {"stdout": big, "numbers": (0..10_000).collect::<Vec<u32>>()},
            "retcode": 0, "success": true,
        });
        self.remember_return(&ret);
        let h = self.h.clone();
        self.case(LARGE, format!("a return of {}", size(&ret)), &["returner"], async move {
            store_and_read_back(&h, &ret, check_jid).await
        })
        .await;
    }

    async fn concurrency(&mut self) {
        // No more at once than the returner may run: past its max_concurrency
        // calls would wait for the host's slots, not race in the returner.
        let calls = CONCURRENT_CALLS.min(self.h.max_concurrency().max(1) as usize);
        let jid = self.jids.next();
        let rets: Vec<Value> = (0..calls)
            .map(|i| {
                json!({"id": format!("race{i}"), "jid": jid, "fun": "test.echo", "fun_args": [i],
                       "return": format!("answer of race{i}"), "retcode": 0, "success": true})
            })
            .collect();
        for ret in &rets {
            self.remember_return(ret);
        }
        let (h, check_jid) = (self.h.clone(), self.implements("get_jid"));
        self.case(CONCURRENT_RETURNS, format!("{calls} minions return one job at once"), &["returner"], async move {
            let mut tasks = tokio::task::JoinSet::new();
            for ret in rets.clone() {
                let h = h.clone();
                tasks.spawn(async move { h.call("returner", json!({"ret": ret})).await });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| format!("a call panicked: {e}"))?.map_err(|e| answered("returner", &jid, &e))?;
            }
            if check_jid {
                for ret in &rets {
                    read_back(&h, ret).await?;
                }
            }
            Ok(())
        })
        .await;

        let (h, jid) = (self.h.clone(), self.jids.next());
        let loads: Vec<Value> = (0..calls).map(|i| publish_load(&jid, "test.ping", &format!("writer{i}"))).collect();
        self.case(CONCURRENT_SAVE_LOAD, format!("{calls} save_load calls race on one job"), &["save_load", "get_load"], async move {
            let mut tasks = tokio::task::JoinSet::new();
            for load in loads.clone() {
                let (h, jid) = (h.clone(), jid.clone());
                tasks.spawn(async move { h.call("save_load", json!({"jid": jid, "load": load})).await });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| format!("a call panicked: {e}"))?.map_err(|e| answered("save_load", &jid, &e))?;
            }
            let first = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", &jid, &e))?;
            let winner = loads
                .iter()
                .find(|load| contains(&first, load).is_ok())
                .ok_or_else(|| format!("get_load({jid}) answered {}, which is none of the loads saved whole", brief(&first)))?;
            let again = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", &jid, &e))?;
            contains(&again, winner).map_err(|why| format!("a second get_load({jid}) changed: it {why}"))
        })
        .await;
    }

    async fn batch(&mut self) {
        let rets = fixture(MINION_RETURNS, &mut self.jids);
        for ret in &rets {
            self.remember_return(ret);
        }
        let h = self.h.clone();
        let jobs: BTreeSet<&str> = rets.iter().filter_map(|ret| ret["jid"].as_str()).collect();
        let name = format!("{} returns of {} jobs in one batch, delivered twice", rets.len(), jobs.len());
        self.case(BATCH_ROUND_TRIP, name, &[RETURNER_BATCH, "returner", "get_jid"], async move {
            for delivery in ["first", "second"] {
                h.call_batch(&rets).await.map_err(|e| {
                    format!("returner_batch ({delivery} delivery) answered {}: {}", e.kind.as_str(), e.message)
                })?;
                for ret in &rets {
                    read_back(&h, ret).await.map_err(|e| format!("after the {delivery} delivery: {e}"))?;
                }
            }
            Ok(())
        })
        .await;
    }

    async fn clean_old_jobs(&mut self) {
        let h = self.h.clone();
        let recent: Vec<(String, Value)> = self.stored.loads.iter().take(3).map(|(j, l)| (j.clone(), l.clone())).collect();
        let check_loads = self.implements("save_load") && self.implements("get_load");
        self.case(CLEAN_OLD_JOBS, "clean_old_jobs after this run's jobs", &["clean_old_jobs"], async move {
            h.call("clean_old_jobs", json!({})).await.map_err(|e| answered("clean_old_jobs", "", &e))?;
            if check_loads {
                for (jid, load) in &recent {
                    let stored = h.call("get_load", json!({"jid": jid})).await.map_err(|e| answered("get_load", jid, &e))?;
                    contains(&stored, load).map_err(|why| format!("after clean_old_jobs, get_load({jid}) of a job saved seconds ago {why}"))?;
                }
            }
            Ok(())
        })
        .await;
    }
}

/// The JSON lines of an embedded fixture, with every jid in them swapped
/// for a fresh one (in the same order).
fn fixture(text: &str, jids: &mut JidSource) -> Vec<Value> {
    let mut originals = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(value) = serde_json::from_str::<Value>(line) {
            collect_jids(&value, &mut originals);
        }
    }
    let fresh: Vec<(String, String)> = originals.into_iter().map(|old| (old, jids.next())).collect();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let line = fresh.iter().fold(line.to_owned(), |line, (old, new)| line.replace(old.as_str(), new));
            serde_json::from_str(&line).ok()
        })
        .collect()
}

fn collect_jids(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v.as_str() {
                    Some(s) if key.ends_with("jid") && start_time(s).is_some() => {
                        into.insert(s.to_owned());
                    }
                    _ => collect_jids(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_jids(v, into)),
        _ => {}
    }
}

/// A publish load as a Salt master saves it.
fn publish_load(jid: &str, fun: &str, tgt: &str) -> Value {
    json!({"cmd": "publish", "tgt": tgt, "fun": fun, "arg": [], "tgt_type": "glob", "ret": "", "jid": jid,
           "user": "root", "kwargs": {"show_jid": false}})
}

async fn store_and_read_back(h: &Harness, ret: &Value, check_jid: bool) -> CaseOutcome {
    let jid = ret["jid"].as_str().unwrap_or_default();
    h.call("returner", json!({"ret": ret})).await.map_err(|e| answered("returner", jid, &e))?;
    if check_jid { read_back(h, ret).await } else { Ok(()) }
}

/// get_jid answers `ret`'s return under its minion id.
async fn read_back(h: &Harness, ret: &Value) -> CaseOutcome {
    let (jid, id) = (ret["jid"].as_str().unwrap_or_default(), ret["id"].as_str().unwrap_or_default());
    let job = h.call("get_jid", json!({"jid": jid})).await.map_err(|e| answered("get_jid", jid, &e))?;
    let Value::Object(minions) = &job else {
        return Err(format!("get_jid({jid}) answered {}, not an object keyed by minion id", brief(&job)));
    };
    let got = minions.get(id).ok_or_else(|| format!("get_jid({jid}) has no return of minion {id}: {}", brief(&job)))?;
    match got.get("return") {
        Some(r) if *r == ret["return"] => Ok(()),
        Some(r) => Err(format!("get_jid({jid})[{id}][\"return\"] differs: sent {}, got {}", brief(&ret["return"]), brief(r))),
        None => Err(format!("get_jid({jid})[{id}] has no \"return\": {}", brief(got))),
    }
}

/// Salt's job summary (`format_jid_instance`) of `load`.
fn check_summary(jid: &str, job: &Value, load: &Value) -> CaseOutcome {
    let Value::Object(job) = job else { return Err(format!("is {}, not an object", brief(job))) };
    for key in ["Function", "Arguments", "Target", "Target-type", "User", "StartTime"] {
        if !job.contains_key(key) {
            return Err(format!("has no {key:?}: {}", brief(&Value::Object(job.clone()))));
        }
    }
    if load.get("fun").is_some() && job.get("Function") != load.get("fun") {
        return Err(format!("has Function {}, but the load ran {}", brief(&job["Function"]), brief(&load["fun"])));
    }
    let want = start_time(jid).unwrap_or_default();
    if job["StartTime"] != json!(want) {
        return Err(format!("has StartTime {}, Salt's jid_to_time gives {want:?}", brief(&job["StartTime"])));
    }
    Ok(())
}

/// `stored` is an object holding every key of `expected` with the same
/// value (a returner may add keys, as Salt's local_cache adds `Minions`).
fn contains(stored: &Value, expected: &Value) -> CaseOutcome {
    let (Value::Object(stored), Value::Object(expected)) = (stored, expected) else {
        return Err(format!("answered {}, expected {}", brief(stored), brief(expected)));
    };
    for (key, want) in expected {
        match stored.get(key) {
            Some(got) if got == want => {}
            Some(got) => return Err(format!("has {key:?} = {}, expected {}", brief(got), brief(want))),
            None => return Err(format!("has no {key:?} (expected {}): {}", brief(want), brief(&Value::Object(stored.clone())))),
        }
    }
    Ok(())
}

fn answered(function: &str, arg: &str, e: &crate::error::CallError) -> String {
    format!("{function}({arg}) answered {}: {}", e.kind.as_str(), e.message)
}

/// A value for a message: its JSON, cut at 160 characters.
fn brief(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

fn size(v: &Value) -> String {
    let bytes = v.to_string().len();
    if bytes >= 1024 { format!("{} KiB", bytes / 1024) } else { format!("{bytes} B") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_get_fresh_jids_everywhere_in_the_same_order() {
        let text = "{\"jid\": \"20261123084300320186\", \"load\": {\"jid\": \"20261123084300320186\", \"__pub_jid\": \"20261123084300320186\"}}\n\
                    {\"ret\": {\"jid\": \"20261123084300973691\"}, \"note\": \"req\"}\n";
        let mut jids = JidSource::new();
        let lines = fixture(text, &mut jids);
        let (first, second) = (lines[0]["jid"].as_str().unwrap(), lines[1]["ret"]["jid"].as_str().unwrap());
        assert_ne!(first, "20261123084300320186");
        assert_eq!(lines[0]["load"]["jid"], first);
        assert_eq!(lines[0]["load"]["__pub_jid"], first);
        assert!(first < second, "the order of the recorded jids is kept");
        assert!(jids.next().as_str() > second, "later jids are newer");
        assert_eq!(lines[1]["note"], "req");
    }

    #[test]
    fn every_embedded_payload_parses() {
        let mut jids = JidSource::new();
        assert_eq!(fixture(MINION_RETURNS, &mut jids).len(), MINION_RETURNS.lines().count());
        assert_eq!(fixture(MASTER_CALLS, &mut jids).len(), MASTER_CALLS.lines().count());
    }

    #[test]
    fn contains_allows_extra_keys_and_names_the_differing_one() {
        let stored = json!({"fun": "test.ping", "tgt": "n1", "Minions": ["n1"]});
        assert!(contains(&stored, &json!({"fun": "test.ping", "tgt": "n1"})).is_ok());
        let why = contains(&stored, &json!({"tgt": "n2"})).unwrap_err();
        assert!(why.contains("\"tgt\" = \"n1\", expected \"n2\""), "{why}");
        assert!(contains(&json!([]), &json!({})).unwrap_err().contains("answered []"));
    }

    #[test]
    fn summaries_are_checked_against_salts_format() {
        let jid = "20261123084300320186";
        let load = publish_load(jid, "test.ping", "n1");
        let good = json!({"Function": "test.ping", "Arguments": [], "Target": "n1", "Target-type": "glob",
                          "User": "root", "StartTime": "2026, Nov 23 08:43:00.320186"});
        assert!(check_summary(jid, &good, &load).is_ok());
        let mut wrong_time = good.clone();
        wrong_time["StartTime"] = json!("2026-11-23");
        assert!(check_summary(jid, &wrong_time, &load).unwrap_err().contains("jid_to_time"));
        assert!(check_summary(jid, &json!("x"), &load).is_err());
    }

    #[test]
    fn brief_cuts_long_values_on_a_char_boundary() {
        let long = json!("é".repeat(500));
        let text = brief(&long);
        assert!(text.ends_with("bytes)") && text.chars().count() < 200, "{text}");
    }
}
