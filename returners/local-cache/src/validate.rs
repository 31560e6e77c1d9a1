//! Checks on names that a request supplies and the cache turns into paths.

use returner_sdk::{Error, Result};

/// A name used as (or hashed into) one path component: not empty, not `.`
/// or `..`, and without `/`, `\` or NUL. `field` names it in the error.
pub fn path_component(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(
            field,
            format!("`{value}` is not a usable name"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '\\' | '\0')) {
        return Err(Error::invalid(field, format!("must not contain {bad:?}")));
    }
    Ok(())
}

/// A jid. It is hashed before it becomes a path, but is checked like a
/// path component so that every returner agrees on what a jid may be.
pub fn jid(field: &str, value: &str) -> Result<()> {
    path_component(field, value)
}

/// A minion id, which names a directory inside the job's directory. A
/// leading dot is refused too: those names belong to the cache's own files
/// (`.load.p`, `.minions.p`, temporary files) and Salt's `get_jid` skips them.
pub fn minion_id(field: &str, value: &str) -> Result<()> {
    path_component(field, value)?;
    if value.starts_with('.') {
        return Err(Error::invalid(field, "must not start with '.'"));
    }
    Ok(())
}

/// A syndic id, which names the file `.minions.<syndic_id>.p`.
pub fn syndic_id(field: &str, value: &str) -> Result<()> {
    path_component(field, value)?;
    if value.contains("..") {
        return Err(Error::invalid(field, "must not contain \"..\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_message(result: Result<()>) -> String {
        match result {
            Err(Error::Invalid(message)) => message,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_names_pass() {
        jid("jid", "20261123084300320186").unwrap();
        jid("jid", "req").unwrap();
        minion_id("ret.id", "web-01.example.com").unwrap();
        minion_id("ret.id", "vm_master").unwrap();
        syndic_id("syndic_id", "syndic.example.com").unwrap();
    }

    #[test]
    fn traversal_and_separators_are_refused_naming_the_field() {
        for bad in ["", ".", "..", "a/b", "/etc", "a\\b", "a\0b", "../x"] {
            let message = invalid_message(jid("jid", bad));
            assert!(message.starts_with("jid:"), "{bad:?}: {message}");
            let message = invalid_message(minion_id("ret.id", bad));
            assert!(message.starts_with("ret.id:"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn minion_ids_may_not_shadow_the_caches_dot_files() {
        let message = invalid_message(minion_id("ret.id", ".load.p"));
        assert!(message.contains("'.'"), "{message}");
        jid("jid", ".hidden").unwrap();
    }

    #[test]
    fn syndic_ids_may_not_contain_dot_dot() {
        invalid_message(syndic_id("syndic_id", "a..b"));
        invalid_message(syndic_id("syndic_id", "a/b"));
        invalid_message(syndic_id("syndic_id", "a\0"));
    }
}
