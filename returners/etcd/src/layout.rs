//! What may become one segment of a key (a jid, a minion id), and how an
//! event tag becomes a key under `events/`.

use returner_sdk::{Error, Result};

/// A jid is one key segment: not empty, not `.` / `..`, no `/` or control character.
pub fn check_jid(field: &str, jid: &str) -> Result<()> {
    segment(field, jid)
}

/// A minion id is one key segment that does not start with `.`, which marks
/// a job's own keys (`.load.p`).
pub fn check_minion_id(field: &str, id: &str) -> Result<()> {
    segment(field, id)?;
    if id.starts_with('.') {
        return Err(Error::invalid(field, "must not start with '.'"));
    }
    Ok(())
}

fn segment(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(Error::invalid(field, format!("`{value}` is not a usable key segment")));
    }
    if let Some(bad) = value.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(Error::invalid(field, format!("must not contain {bad:?}")));
    }
    Ok(())
}

/// `events/<tag>`: the tag's `/` keep their meaning (`events/salt/job/<jid>/ret/<id>`);
/// what the host would refuse in a key is percent-encoded: `%` and control
/// characters, and segments that are empty, `.` or `..`.
pub fn event_key(tag: &str) -> String {
    let mut key = String::from("events");
    for segment in tag.split('/') {
        key.push('/');
        match segment {
            "" => key.push('%'),
            "." => key.push_str("%2E"),
            ".." => key.push_str("%2E%2E"),
            _ => {
                for c in segment.chars() {
                    if c == '%' || c.is_control() {
                        let mut buf = [0; 4];
                        for byte in c.encode_utf8(&mut buf).bytes() {
                            key.push_str(&format!("%{byte:02X}"));
                        }
                    } else {
                        key.push(c);
                    }
                }
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_keys_under_events() {
        assert_eq!(event_key("salt/job/20261123084332485602/ret/n1"), "events/salt/job/20261123084332485602/ret/n1");
        assert_eq!(event_key("20261123084332485602"), "events/20261123084332485602");
        assert_eq!(event_key("salt/auth"), "events/salt/auth");
    }

    #[test]
    fn tags_the_host_would_refuse_are_encoded() {
        assert_eq!(event_key(""), "events/%");
        assert_eq!(event_key("/a//b/"), "events/%/a/%/b/%");
        assert_eq!(event_key("a/../."), "events/a/%2E%2E/%2E");
        assert_eq!(event_key("50%\n"), "events/50%25%0A");
    }

    #[test]
    fn jids_and_ids_are_single_segments() {
        assert!(check_jid("jid", "20261123084300320186").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_jid("jid", bad).is_err(), "{bad:?}");
        }
        assert!(check_minion_id("id", "n1.example.com").is_ok());
        assert!(check_minion_id("id", ".load.p").is_err());
    }
}
