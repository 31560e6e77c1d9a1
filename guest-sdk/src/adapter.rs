//! Glue between the generated WIT exports and a [`Returner`]: JSON text in
//! and out, SDK errors to WIT errors. Used by [`export_returner!`](crate::export_returner).

use std::marker::PhantomData;

use serde_json::Value;

use crate::error::Error;
use crate::returner::{Event, JobReturn, Returner};
use crate::wit::batch_export::exports::salt::returner::batch::Guest as BatchGuest;
use crate::wit::exports::salt::returner::returner::Guest;
use crate::wit::salt::returner::types as wit;

/// Implements the generated `Guest` trait for any `R: Returner`.
pub struct Adapter<R>(PhantomData<R>);

type WitResult<T> = Result<T, wit::Error>;

/// Parses JSON text the host sent; `field` names it in the error.
fn parse(field: &str, json: &str) -> Result<Value, Error> {
    serde_json::from_str(json)
        .map_err(|err| Error::invalid(field, format!("not valid JSON: {err}")))
}

fn render(value: &Value) -> WitResult<String> {
    serde_json::to_string(value).map_err(|err| Error::from(err).into())
}

impl JobReturn {
    /// `field` names the return in errors (`ret`, `rets[3]`).
    ///
    /// The typed JSON slots hold `full`'s own `return` and `fun_args`, so
    /// `full` is parsed once and they are taken from it: parsing their text
    /// too would parse a large return twice. A slot's text is parsed only
    /// when `full` lacks its key (the host then sends `null` and `[]`).
    fn from_wit(ret: wit::JobReturn, field: &str) -> Result<Self, Error> {
        let full = parse(&format!("{field}.full"), &ret.full)?;
        let slot = |key: &str, slot: &str, text: &str| match full.get(key) {
            Some(value) => Ok(value.clone()),
            None => parse(&format!("{field}.{slot}"), text),
        };
        Ok(JobReturn {
            fun_args: slot("fun_args", "fun_args", &ret.fun_args)?,
            ret: slot("return", "return", &ret.return_)?,
            id: ret.id,
            jid: ret.jid,
            fun: ret.fun,
            retcode: ret.retcode,
            success: ret.success,
            full,
        })
    }
}

impl<R: Returner> Guest for Adapter<R> {
    fn returner(ret: wit::JobReturn) -> WitResult<()> {
        Ok(R::returner(JobReturn::from_wit(ret, "ret")?)?)
    }

    fn save_load(jid: String, load: String, minions: Option<Vec<String>>) -> WitResult<()> {
        Ok(R::save_load(&jid, parse("load", &load)?, minions)?)
    }

    fn get_load(jid: String) -> WitResult<String> {
        render(&R::get_load(&jid)?)
    }

    fn get_jid(jid: String) -> WitResult<String> {
        render(&R::get_jid(&jid)?)
    }

    fn get_fun(fun: String) -> WitResult<String> {
        render(&R::get_fun(&fun)?)
    }

    fn get_jids() -> WitResult<String> {
        render(&R::get_jids()?)
    }

    fn get_jids_filter(count: u32, filter_find_job: bool) -> WitResult<String> {
        render(&R::get_jids_filter(count, filter_find_job)?)
    }

    fn get_minions() -> WitResult<Vec<String>> {
        Ok(R::get_minions()?)
    }

    fn prep_jid(nocache: bool, passed_jid: Option<String>) -> WitResult<String> {
        Ok(R::prep_jid(nocache, passed_jid)?)
    }

    fn save_minions(jid: String, minions: Vec<String>, syndic_id: Option<String>) -> WitResult<()> {
        Ok(R::save_minions(&jid, minions, syndic_id)?)
    }

    fn clean_old_jobs() -> WitResult<()> {
        Ok(R::clean_old_jobs()?)
    }

    fn event_return(events: Vec<wit::Event>) -> WitResult<()> {
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                Ok(Event {
                    data: parse(&format!("events[{i}].data"), &event.data)?,
                    tag: event.tag,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(R::event_return(events)?)
    }

    fn update_endtime(jid: String, time: String) -> WitResult<()> {
        Ok(R::update_endtime(&jid, time)?)
    }

    fn get_endtime(jid: String) -> WitResult<Option<String>> {
        Ok(R::get_endtime(&jid)?)
    }
}

impl<R: Returner> BatchGuest for Adapter<R> {
    fn returner_batch(rets: Vec<wit::JobReturn>) -> WitResult<()> {
        let rets = rets
            .into_iter()
            .enumerate()
            .map(|(i, ret)| JobReturn::from_wit(ret, &format!("rets[{i}]")))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(R::returner_batch(rets)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bare;
    impl Returner for Bare {}

    fn wit_return(fun_args: &str) -> wit::JobReturn {
        wit::JobReturn {
            id: "m1".into(),
            jid: "20261123084300320186".into(),
            fun: "test.ping".into(),
            fun_args: fun_args.into(),
            return_: "true".into(),
            retcode: Some(0),
            success: Some(true),
            full: r#"{"id":"m1","return":true}"#.into(),
        }
    }

    #[test]
    fn job_return_json_slots_are_parsed() {
        let ret = JobReturn::from_wit(wit_return(r#"["a", 1]"#), "ret").unwrap();
        assert_eq!(ret.fun_args, serde_json::json!(["a", 1]));
        assert_eq!(ret.ret, Value::Bool(true));
        assert_eq!(ret.full["id"], "m1");
        assert_eq!(ret.retcode, Some(0));
    }

    #[test]
    fn the_typed_slots_come_from_the_full_return_when_it_has_them() {
        let mut wire = wit_return("[]");
        wire.full = r#"{"id":"m1","fun_args":["x"],"return":{"a":[1,2]}}"#.into();
        // Not parsed: `full` has both keys.
        wire.return_ = "not json".into();
        wire.fun_args = "not json either".into();
        let ret = JobReturn::from_wit(wire, "ret").unwrap();
        assert_eq!(ret.ret, serde_json::json!({"a": [1, 2]}));
        assert_eq!(ret.fun_args, serde_json::json!(["x"]));
    }

    #[test]
    fn malformed_json_from_the_host_is_invalid_and_names_the_field() {
        let err = JobReturn::from_wit(wit_return("[oops"), "ret").unwrap_err();
        match err {
            Error::Invalid(msg) => assert!(msg.starts_with("ret.fun_args:"), "{msg}"),
            other => panic!("expected invalid, got {other:?}"),
        }
        match Adapter::<Bare>::save_load("j".into(), "{".into(), None) {
            Err(wit::Error::Invalid(msg)) => assert!(msg.starts_with("load:"), "{msg}"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn unimplemented_functions_answer_unsupported_naming_the_function() {
        match Adapter::<Bare>::get_fun("test.ping".into()) {
            Err(wit::Error::Unsupported(msg)) => assert!(msg.contains("get_fun"), "{msg}"),
            other => panic!("expected unsupported, got {other:?}"),
        }
        assert!(matches!(
            Adapter::<Bare>::clean_old_jobs(),
            Err(wit::Error::Unsupported(_))
        ));
    }

    /// Remembers what `returner` was handed, and refuses the minion `bad`.
    struct Recorder;
    thread_local! {
        static STORED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    impl Returner for Recorder {
        fn returner(ret: JobReturn) -> crate::Result<()> {
            if ret.id == "bad" {
                return Err(Error::invalid("ret.id", "refused"));
            }
            STORED.with(|s| s.borrow_mut().push(format!("{}/{}", ret.jid, ret.id)));
            Ok(())
        }
    }

    fn wit_return_of(id: &str, jid: &str) -> wit::JobReturn {
        wit::JobReturn { id: id.into(), jid: jid.into(), ..wit_return("[]") }
    }

    #[test]
    fn the_default_batch_stores_each_return_in_order_and_stops_at_the_first_error() {
        STORED.with(|s| s.borrow_mut().clear());
        let batch = vec![wit_return_of("m1", "1"), wit_return_of("m2", "2"), wit_return_of("m1", "3")];
        Adapter::<Recorder>::returner_batch(batch).unwrap();
        assert_eq!(STORED.with(|s| s.borrow().clone()), ["1/m1", "2/m2", "3/m1"]);

        STORED.with(|s| s.borrow_mut().clear());
        let batch = vec![wit_return_of("m1", "1"), wit_return_of("bad", "2"), wit_return_of("m1", "3")];
        assert!(matches!(Adapter::<Recorder>::returner_batch(batch), Err(wit::Error::Invalid(_))));
        assert_eq!(STORED.with(|s| s.borrow().clone()), ["1/m1"]);
    }

    #[test]
    fn a_malformed_return_in_a_batch_is_named_by_its_place() {
        let mut bad = wit_return_of("m2", "2");
        bad.full = "{".into();
        match Adapter::<Recorder>::returner_batch(vec![wit_return_of("m1", "1"), bad]) {
            Err(wit::Error::Invalid(msg)) => assert!(msg.starts_with("rets[1].full:"), "{msg}"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}
