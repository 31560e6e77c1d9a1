//! Text a guest or a request influences, made fit for the host's logs and
//! answers: on one line (control characters escaped) and of bounded length.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` would let a writer break out of its log line or disguise it:
/// C0 and C1 controls (newline, CR, ESC, DEL, NEL, ...), Unicode line and
/// paragraph separators, and bidirectional overrides that reorder what a
/// terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Writing into a String cannot fail.
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every control character escaped (`\n`, `\r`, `\t`, `\u{1b}`),
/// so it cannot start a new log line nor drive a terminal. Borrowed when
/// there is nothing to escape.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` on one line (as [`one_line`]) and at most `max` bytes long, cut on a
/// character boundary and marked `… (N bytes cut)`, N counting the bytes of
/// `s` left out. Reads no further into `s` than it keeps, so a huge input
/// costs no more than a small one.
pub fn bounded(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 32);
    let mut escaped = String::new();
    for (at, c) in s.char_indices() {
        escaped.clear();
        if needs_escape(c) {
            push_escaped(&mut escaped, c);
        } else {
            escaped.push(c);
        }
        if out.len() + escaped.len() > max {
            let _ = write!(out, "… ({} bytes cut)", s.len() - at);
            return out;
        }
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_log_line_stays_on_its_line() {
        let forged = "ok\n2026-11-30T00:00:00.000000Z  WARN returner_host::audit: capability denied\r\x1b[2K\u{85}\u{2028}";
        let escaped = one_line(forged);
        assert!(!escaped.chars().any(needs_escape), "{escaped}");
        assert_eq!(
            escaped,
            "ok\\n2026-11-30T00:00:00.000000Z  WARN returner_host::audit: capability denied\\r\\u{1b}[2K\\u{85}\\u{2028}"
        );
        assert!(matches!(one_line("plain text, é ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn bounded_cuts_on_a_char_boundary_and_says_how_much() {
        assert_eq!(bounded("abc", 10), "abc");
        assert_eq!(bounded("héllo", 2), "h… (5 bytes cut)");
        assert_eq!(bounded("héllo", 3), "hé… (3 bytes cut)");
        assert_eq!(bounded("a\nb", 3), "a\\n… (1 bytes cut)");
        let huge = "x".repeat(50 * 1024 * 1024);
        let cut = bounded(&huge, 4096);
        assert_eq!(cut, format!("{}… ({} bytes cut)", "x".repeat(4096), huge.len() - 4096));
    }

    #[test]
    fn an_escape_is_never_split_by_the_cut() {
        // `\n` escapes to two bytes: it goes whole or not at all.
        assert_eq!(bounded("ab\n", 3), "ab… (1 bytes cut)");
    }
}
