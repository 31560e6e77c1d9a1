//! JSON text exactly as Python's `json.dumps` writes it with its defaults
//! (what Salt's `salt.utils.json.dumps` stores): `", "` and `": "` as
//! separators, and everything outside printable ASCII escaped as `\uXXXX`.

use std::fmt::Write;
use std::ops::Range;

use serde_json::{Map, Value};

/// `json.dumps(value)`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// `json.dumps(object)`, and where in it the value of the object's member
/// `key` is written, if it has one: `json.dumps(object[key])` is that part,
/// without serializing it a second time.
pub fn dumps_with_member(object: &Value, key: &str) -> (String, Option<Range<usize>>) {
    let Value::Object(map) = object else { return (dumps(object), None) };
    let mut out = String::new();
    let member = write_object(&mut out, map, Some(key));
    (out, member)
}

/// An object's members in order; where the value of member `key` went.
fn write_object(out: &mut String, map: &Map<String, Value>, key: Option<&str>) -> Option<Range<usize>> {
    let mut member = None;
    out.push('{');
    for (i, (name, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_string(out, name);
        out.push_str(": ");
        let start = out.len();
        write_value(out, item);
        if Some(name.as_str()) == key {
            member = Some(start..out.len());
        }
    }
    out.push('}');
    member
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            write_object(out, map, None);
        }
    }
}

/// Python's `ensure_ascii` string: printable ASCII as is, the rest escaped.
/// Runs of characters that need no escape are copied whole: a return's
/// output is mostly such runs, and copying it a character at a time was
/// most of what storing a large return cost.
fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            ' '..='~' => continue,
            _ => "",
        };
        out.push_str(&s[plain..i]);
        plain = i + c.len_utf8();
        if escape.is_empty() {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Values from Python 3: json.dumps(...)
        assert_eq!(dumps(&json!({"a": 1, "b": [true, null, 1.5]})), r#"{"a": 1, "b": [true, null, 1.5]}"#);
        assert_eq!(dumps(&json!("é ☃ 𝄞")), r#""\u00e9 \u2603 \ud834\udd1e""#);
        assert_eq!(dumps(&json!("tab\tnl\n\u{1}\u{7f}\"\\/")), r#""tab\tnl\n\u0001\u007f\"\\/""#);
        assert_eq!(dumps(&json!([])), "[]");
        assert_eq!(dumps(&json!({})), "{}");
    }

    #[test]
    fn a_member_is_the_part_that_dumps_of_it_writes() {
        for object in [json!({"a": 1, "return": {"x": ["é", null]}, "z": "s"}), json!({"return": "\n"}), json!({"a": 1})] {
            let (text, member) = dumps_with_member(&object, "return");
            assert_eq!(text, dumps(&object));
            assert_eq!(member.map(|r| text[r].to_owned()), object.get("return").map(dumps));
        }
        assert_eq!(dumps_with_member(&json!([1]), "return"), ("[1]".to_owned(), None));
    }

    /// Python's escaping, a character at a time, as its docs put it.
    fn escaped_one_by_one(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                ' '..='~' => out.push(c),
                _ => c.encode_utf16(&mut [0u16; 2]).iter().for_each(|u| out.push_str(&format!("\\u{u:04x}"))),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn strings_escape_as_one_character_at_a_time() {
        let pieces = ["", "plain", "\"", "\\", "\n", "\r\n", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}", "\u{7f}", "é", "☃", "𝄞", " ", "~", "/"];
        // Every pair and triple of pieces: runs that start, end and meet escapes.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let s = format!("{a}{b}{c}");
                    assert_eq!(dumps(&json!(s)), escaped_one_by_one(&s), "{s:?}");
                }
            }
        }
    }
}
