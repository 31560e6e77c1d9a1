//! Glue between the generated WIT exports and a [`Returner`]: JSON text in
//! and out, SDK errors to WIT errors. Used by [`export_returner!`](crate::export_returner).

use std::marker::PhantomData;

use serde_json::Value;

use crate::error::Error;
use crate::returner::{Event, JobReturn, Returner};
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
    fn from_wit(ret: wit::JobReturn) -> Result<Self, Error> {
        Ok(JobReturn {
            fun_args: parse("ret.fun_args", &ret.fun_args)?,
            ret: parse("ret.return", &ret.return_)?,
            full: parse("ret.full", &ret.full)?,
            id: ret.id,
            jid: ret.jid,
            fun: ret.fun,
            retcode: ret.retcode,
            success: ret.success,
        })
    }
}

impl<R: Returner> Guest for Adapter<R> {
    fn returner(ret: wit::JobReturn) -> WitResult<()> {
        Ok(R::returner(JobReturn::from_wit(ret)?)?)
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
        let ret = JobReturn::from_wit(wit_return(r#"["a", 1]"#)).unwrap();
        assert_eq!(ret.fun_args, serde_json::json!(["a", 1]));
        assert_eq!(ret.ret, Value::Bool(true));
        assert_eq!(ret.full["id"], "m1");
        assert_eq!(ret.retcode, Some(0));
    }

    #[test]
    fn malformed_json_from_the_host_is_invalid_and_names_the_field() {
        let err = JobReturn::from_wit(wit_return("[oops")).unwrap_err();
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
}
