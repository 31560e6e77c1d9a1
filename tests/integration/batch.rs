//! Batch delivery through the library (`Returner::call_batch`; the ingest
//! API does not offer it): the shipped returners store a batch exactly as
//! one `returner` call per return would, a redelivered batch changes
//! nothing, and a module without the batch export still loads and says so.

use std::collections::BTreeSet;
use std::path::Path;

use returner_host::config::{HostConfig, Overrides};
use returner_host::dispatch::{ReturnerHost, parse_call};
use returner_host::error::ErrorKind;
use returner_host::runtime::{Call, Runtime, RuntimeOptions};
use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::mariadb::TestDb;
use returner_host_tests::{guest, salt_fixture_lines, temp_dir, toml_path};
use serde_json::{Value, json};

use super::etcd::etcd_profile_toml;
use super::mysql::{RETURNER_TABLES, database};

type JobReturn = returner_host::bindings::JobReturn;

/// The recorded returns of a minion and of a master's job cache: 17 returns
/// of 17 jobs, from several minions, in the order Salt made them.
fn recorded_returns() -> Vec<JobReturn> {
    let minion = salt_fixture_lines("minion-returns.jsonl");
    let master = salt_fixture_lines("master-job-cache-calls.jsonl");
    let master = master.into_iter().filter(|c| c["call"] == "returner").map(|c| c["ret"].clone());
    minion.into_iter().chain(master).map(|ret| job_return(&ret)).collect()
}

/// `ret` as the ingest API hands it on.
fn job_return(ret: &Value) -> JobReturn {
    match parse_call("returner", json!({ "ret": ret }).to_string().as_bytes()) {
        Ok(Call::Returner(ret)) => ret,
        other => panic!("not a return: {other:?}"),
    }
}

/// The host library serving `returners` (TOML of profiles and returners),
/// its data in `dir/var`.
fn start_host(dir: &Path, returners: &str) -> ReturnerHost {
    let text = format!("[server]\ndata_dir = {}\n{returners}", toml_path(&dir.join("var")));
    let config = HostConfig::parse(&text, &dir.join("host.toml"), dir, &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    ReturnerHost::start(&config).unwrap_or_else(|e| panic!("{e:#}"))
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Store `rets` with one `returner` call each, as a host without batch does.
async fn one_by_one(host: &ReturnerHost, name: &str, rets: &[JobReturn]) {
    let returner = host.returner(name).unwrap();
    for ret in rets {
        returner.call(host.runtime(), &Call::Returner(ret.clone())).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

async fn batch(host: &ReturnerHost, name: &str, rets: &[JobReturn]) {
    let returner = host.returner(name).unwrap();
    returner.call_batch(host.runtime(), rets).await.unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Store `rets` through the returner `single` with one call each and
/// through `batched` in one batch.
async fn store_both_ways(host: &ReturnerHost, rets: &[JobReturn]) {
    assert!(host.returner("batched").unwrap().supports_batch());
    one_by_one(host, "single", rets).await;
    batch(host, "batched", rets).await;
}

fn mysql_returner_toml(name: &str, profile: &str) -> String {
    format!(
        "[returners.{name}]\nmodule = {}\nlimits = {{ deadline_ms = 20000 }}\n[returners.{name}.grants.mysql]\nprofile = \"{profile}\"\ntables = {RETURNER_TABLES}\n",
        toml_path(&guest("returner-mysql"))
    )
}

/// `salt_returns` as Salt's readers see it, in a stable order.
fn salt_returns(db: &TestDb) -> Vec<Vec<String>> {
    db.sql("SELECT fun, jid, `return`, id, success, full_ret FROM salt_returns ORDER BY jid, id, CAST(full_ret AS BINARY)")
}

#[test]
fn mysql_a_batch_stores_the_rows_single_calls_store_and_a_redelivery_adds_none() {
    let dir = temp_dir();
    let (single_db, batch_db) = (database(), database());
    let config = format!(
        "{}{}{}{}",
        single_db.profile_toml("single_db", &dir.path().join("single.pass")),
        batch_db.profile_toml("batch_db", &dir.path().join("batch.pass")),
        mysql_returner_toml("single", "single_db"),
        mysql_returner_toml("batched", "batch_db"),
    );
    let rets = recorded_returns();
    let jids: BTreeSet<&str> = rets.iter().map(|r| r.jid.as_str()).collect();
    assert!(jids.len() > 1 && rets.iter().map(|r| &r.id).collect::<BTreeSet<_>>().len() > 1, "mixed jobs and minions");
    tokio().block_on(async {
        let host = start_host(dir.path(), &config);
        store_both_ways(&host, &rets).await;
        let rows = salt_returns(&single_db);
        assert_eq!(rows.len(), rets.len());
        assert_eq!(salt_returns(&batch_db), rows, "a batch stores what one call per return stores");

        // Delivered again, whole, in part, one alone, and one call each.
        batch(&host, "batched", &rets).await;
        batch(&host, "batched", &rets[3..9]).await;
        one_by_one(&host, "batched", &rets[..2]).await;
        one_by_one(&host, "single", &rets).await;
        assert_eq!(salt_returns(&batch_db), rows, "a redelivery adds no row");
        assert_eq!(salt_returns(&single_db), rows, "a redelivery adds no row");

        // A minion that returns a job again with another payload gets a
        // second row, as with Salt, even when the payloads differ only in
        // case (which the column's collation would not tell apart).
        let with_return = |value: &str| {
            let mut ret = rets[0].clone();
            let mut full: Value = serde_json::from_str(&ret.full).unwrap();
            full["return"] = json!(value);
            ret.full = full.to_string();
            ret
        };
        batch(&host, "batched", &[with_return("changed"), with_return("CHANGED"), with_return("changed")]).await;
        assert_eq!(salt_returns(&batch_db).len(), rets.len() + 2);
    });
}

/// Regression: checking for a stored return inside the insert (`INSERT ...
/// SELECT ... WHERE NOT EXISTS`) took InnoDB's next-key locks on the job's
/// range of the jid index, and concurrent returns of one job from different
/// minions deadlocked each other.
#[test]
fn mysql_returns_of_one_job_from_many_minions_at_once_do_not_deadlock() {
    let dir = temp_dir();
    let db = database();
    let config = format!("{}{}", db.profile_toml("db", &dir.path().join("db.pass")), mysql_returner_toml("mysql", "db"));
    let jid = "20261130120000000000";
    let ret = |minion: usize| job_return(&json!({"id": format!("m{minion}"), "jid": jid, "fun": "test.ping", "return": true}));
    tokio().block_on(async {
        let host = std::sync::Arc::new(start_host(dir.path(), &config));
        let mut calls = tokio::task::JoinSet::new();
        for b in 0..8 {
            let (host, rets): (_, Vec<JobReturn>) = (host.clone(), (0..4).map(|m| ret(b * 4 + m)).collect());
            // Half the minions' returns come in batches, half one call each.
            calls.spawn(async move {
                let returner = host.returner("mysql").unwrap();
                if b % 2 == 0 {
                    return returner.call_batch(host.runtime(), &rets).await;
                }
                for ret in rets {
                    returner.call(host.runtime(), &Call::Returner(ret)).await?;
                }
                Ok(())
            });
        }
        while let Some(outcome) = calls.join_next().await {
            outcome.unwrap().unwrap_or_else(|e| panic!("{e}"));
        }
    });
    assert_eq!(db.sql(&format!("SELECT COUNT(*) FROM salt_returns WHERE jid = '{jid}'")), [["32"]]);
}

/// Every key under `root` with the root taken off, and its value.
fn keyspace(etcd: &EtcdServer, root: &str) -> Vec<(String, String)> {
    etcd.dump(&format!("{root}/")).into_iter().map(|(k, v)| (k[root.len()..].to_owned(), v)).collect()
}

#[test]
fn etcd_a_batch_writes_the_keys_single_calls_write_under_one_lease() {
    let dir = temp_dir();
    let etcd = EtcdServer::start();
    let module = toml_path(&guest("returner-etcd"));
    let returner = |name: &str, root: &str| {
        format!(
            "[returners.{name}]\nmodule = {module}\noptions = {{ ttl = 600 }}\nlimits = {{ deadline_ms = 20000 }}\n\
             grants.etcd = {{ profile = \"main\", root = \"{root}\", ops = [\"read\", \"write\"], max_ttl_seconds = 3600 }}\n"
        )
    };
    let config = format!("{}{}{}", etcd_profile_toml("main", &etcd), returner("single", "/single"), returner("batched", "/batched"));
    let rets = recorded_returns();
    tokio().block_on(async {
        store_both_ways(&start_host(dir.path(), &config), &rets).await;
    });
    let keys = keyspace(&etcd, "/single");
    assert!(keys.len() > 128, "more keys than one transaction takes: {}", keys.len());
    assert_same_keys(&keyspace(&etcd, "/batched"), &keys, "a batch writes what one call per return writes, byte for byte");
    let leases: BTreeSet<i64> = etcd.leases("/batched/").into_iter().collect();
    assert_eq!(leases.len(), 1, "one lease for the batch: {leases:?}");
    assert!(!leases.contains(&0));

    let host_again = || start_host(dir.path(), &config);
    tokio().block_on(async { batch(&host_again(), "batched", &rets).await });
    assert_same_keys(&keyspace(&etcd, "/batched"), &keys, "a redelivery rewrites the same keys");
    // An older return delivered again points `minions/<id>` back at its job,
    // as a late return does in Salt's layout; the next delivery of the
    // newest return moves it on again. Nothing else changes.
    tokio().block_on(async { batch(&host_again(), "batched", &[rets[4].clone(), rets[4].clone(), rets[1].clone()]).await });
    let moved: Vec<String> = differing(&keyspace(&etcd, "/batched"), &keys);
    assert_eq!(moved, ["/minions/m1"]);
    tokio().block_on(async { batch(&host_again(), "batched", &rets[..8]).await });
    assert_same_keys(&keyspace(&etcd, "/batched"), &keys, "the newest return delivered last");
}

/// The keys whose presence or value differs between two keyspaces.
fn differing(got: &[(String, String)], want: &[(String, String)]) -> Vec<String> {
    let (got, want): (BTreeSet<_>, BTreeSet<_>) = (got.iter().collect(), want.iter().collect());
    let keys: BTreeSet<&String> = got.symmetric_difference(&want).map(|(k, _)| k).collect();
    keys.into_iter().cloned().collect()
}

/// Keyspaces are large (a 20,000-line return): name the differing keys only.
fn assert_same_keys(got: &[(String, String)], want: &[(String, String)], what: &str) {
    assert!(got == want, "{what}: these keys differ: {:?}", differing(got, want));
}

/// Every file under `dir`, by its path below it, and its bytes.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn local_cache_a_batch_stores_the_files_single_calls_store_and_a_redelivery_none() {
    let dir = temp_dir();
    let (single, batched) = (dir.path().join("single"), dir.path().join("batched"));
    let returner = |name: &str, jobs: &Path| {
        std::fs::create_dir_all(jobs).unwrap();
        format!("[returners.{name}]\nmodule = \"builtin:local-cache\"\n[returners.{name}.grants.fs]\ndir = {}\nmode = \"rw\"\n", toml_path(jobs))
    };
    let config = format!("{}{}", returner("single", &single), returner("batched", &batched));
    let rets = recorded_returns();
    tokio().block_on(async {
        let host = start_host(dir.path(), &config);
        store_both_ways(&host, &rets).await;
        let files = tree(&single);
        assert_eq!(tree(&batched), files);
        batch(&host, "batched", &rets).await;
        batch(&host, "batched", &rets[5..]).await;
        assert_eq!(tree(&batched), files, "a redelivery changes nothing");
    });
}

/// A component exporting `salt:returner/returner@0.1.2` with every function
/// as `func()` (not type-checked until called), and `batch` as the
/// instance of `batch_functions` of that same type, when given.
fn stub_component(batch_functions: Option<&[&str]>) -> Vec<u8> {
    use wasm_encoder::{
        Alias, CanonicalFunctionSection, CodeSection, Component, ComponentAliasSection, ComponentExportKind,
        ComponentExportSection, ComponentInstanceSection, ComponentTypeSection, ExportKind, ExportSection, Function,
        FunctionSection, InstanceSection, Instruction, Module, ModuleSection, TypeSection,
    };
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut exports = ExportSection::new();
    exports.export("f", ExportKind::Func, 0);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    code.function(&body);
    module.section(&types).section(&funcs).section(&exports).section(&code);

    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut core_instances = InstanceSection::new();
    core_instances.instantiate(0, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
    component.section(&core_instances);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport { instance: 0, kind: ExportKind::Func, name: "f" });
    component.section(&aliases);
    let mut func_types = ComponentTypeSection::new();
    func_types.function().params(Vec::<(&str, wasm_encoder::ComponentValType)>::new()).result(None);
    component.section(&func_types);
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(0, 0, []);
    component.section(&canon);

    let returner_functions = returner_host::runtime::FUNCTIONS.map(|f| f.replace('_', "-"));
    let mut instances = ComponentInstanceSection::new();
    instances.export_items(returner_functions.iter().map(|name| (name.as_str(), ComponentExportKind::Func, 0)));
    if let Some(functions) = batch_functions {
        instances.export_items(functions.iter().map(|name| (*name, ComponentExportKind::Func, 0)));
    }
    component.section(&instances);
    let mut exported = ComponentExportSection::new();
    exported.export("salt:returner/returner@0.1.2", ComponentExportKind::Instance, 0, None);
    if batch_functions.is_some() {
        exported.export("salt:returner/batch@0.1.2", ComponentExportKind::Instance, 1, None);
    }
    component.section(&exported);
    component.finish()
}

#[test]
fn a_module_without_the_batch_export_loads_and_answers_unsupported_without_a_call() {
    let runtime = Runtime::new(RuntimeOptions { instance_slots: 4, ..Default::default() }).unwrap();
    let stub = runtime.load_module(&stub_component(None)).unwrap();
    assert!(!stub.supports_batch());
    assert_eq!(stub.info().batch, None);
    let noop = runtime.load_module_file(&guest("fixture-noop")).unwrap();
    assert!(!noop.supports_batch(), "a module built with export_returner!(T) alone exports no batch");
    for shipped in ["returner-etcd", "returner-mysql", "returner-local-cache"] {
        let module = runtime.load_module_file(&guest(shipped)).unwrap();
        assert_eq!(module.info().batch.as_deref(), Some("salt:returner/batch@0.1.4"), "{shipped}");
    }

    let dir = temp_dir();
    let config = format!("[returners.noop]\nmodule = {}\n", toml_path(&guest("fixture-noop")));
    tokio().block_on(async {
        let host = start_host(dir.path(), &config);
        let noop = host.returner("noop").unwrap();
        assert!(!noop.supports_batch());
        let e = noop.call_batch(host.runtime(), &recorded_returns()[..2]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("does not export salt:returner/batch"), "{}", e.message);
    });
}

#[test]
fn a_malformed_batch_export_is_refused_at_load_naming_it() {
    let runtime = Runtime::new(RuntimeOptions { instance_slots: 4, ..Default::default() }).unwrap();
    let wrong_type = runtime.load_module(&stub_component(Some(&["returner-batch"]))).err().expect("refused");
    let message = format!("{wrong_type:#}");
    assert!(message.contains("salt:returner/batch@0.1.2.returner-batch has the wrong type"), "{message}");
    assert!(message.contains("func(rets: list<job-return>) -> result<_, error>"), "{message}");

    let missing = runtime.load_module(&stub_component(Some(&["store-all"]))).err().expect("refused");
    let message = format!("{missing:#}");
    assert!(message.contains("exports salt:returner/batch@0.1.2 without its function returner-batch"), "{message}");
}
