//! The token rules a statement must pass before it is parsed: an allow-list
//! of token kinds that leaves the server no text to read differently from
//! the parser (no comments, no quoted strings, no escapes, identifiers of
//! `[A-Za-z0-9_$]` only), and the caps that bound what parsing and walking
//! the statement can cost.

use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use super::{Denial, deny};
use crate::guest_text;

/// Most tokens in one statement. Bounds the size of the tree the parser
/// builds, so the cost of checking a statement is known before it is
/// parsed. A multi-row INSERT of 1,000 rows of 6 values is about 14,000.
pub const MAX_TOKENS: usize = 16_384;

/// Most operators in one statement. The parser builds `1 + 1 + ...` in a
/// loop, but the tree it builds is as deep as the chain is long, and
/// walking, printing, comparing and dropping that tree recurse: this cap,
/// with the parser's nesting limit, bounds the depth, and so the stack the
/// check needs (see `checker::STACK_BYTES`, sized by a test at these caps).
pub const MAX_OPERATORS: usize = 1_024;

/// What the token rules found, for the caps that follow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tokens other than whitespace.
    pub tokens: usize,
    /// Operators, symbols and keywords alike.
    pub operators: usize,
}

/// Check every token of `sql` against the allow-list and the caps.
pub fn check(sql: &str) -> Result<Counts, Denial> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Denial { target: "statement".into(), reason: format!("the statement does not parse: {e}") })?;
    let mut counts = Counts::default();
    for token in &tokens {
        if let Token::Whitespace(w) = token {
            match w {
                Whitespace::Space | Whitespace::Newline | Whitespace::Tab => continue,
                Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_) => {
                    return deny("comment", "comments are not allowed in a statement");
                }
            }
        }
        counts.tokens += 1;
        if counts.tokens > MAX_TOKENS {
            return deny("statement", format!("the statement has more than {MAX_TOKENS} tokens, the most a statement may have"));
        }
        match token {
            Token::Word(word) => {
                check_word(&word.value, word.quote_style)?;
                if word.quote_style.is_none() && OPERATOR_KEYWORDS.contains(&word.keyword) {
                    counts.operators += 1;
                }
            }
            Token::Number(n, _) => check_number(n)?,
            Token::Placeholder(p) if p == "?" => {}
            Token::Placeholder(p) => {
                return deny("statement", format!("placeholder `{p}`: only `?` placeholders are allowed"));
            }
            Token::Comma | Token::LParen | Token::RParen | Token::Period | Token::SemiColon => {}
            Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod => counts.operators += 1,
            literal if is_literal(literal) => {
                return deny("literal", "quoted literals are not allowed: pass values as `?` parameters");
            }
            other => {
                return deny("statement", format!("`{}` is not allowed in a statement", printable(&other.to_string())));
            }
        }
        if counts.operators > MAX_OPERATORS {
            return deny("statement", format!("the statement has more than {MAX_OPERATORS} operators, the most a statement may have"));
        }
    }
    Ok(counts)
}

/// Keywords that join operands, counted as operators.
const OPERATOR_KEYWORDS: &[Keyword] = &[
    Keyword::AND,
    Keyword::OR,
    Keyword::XOR,
    Keyword::NOT,
    Keyword::IS,
    Keyword::LIKE,
    Keyword::REGEXP,
    Keyword::RLIKE,
    Keyword::BETWEEN,
    Keyword::DIV,
    Keyword::MOD,
    Keyword::IN,
    Keyword::INTERVAL,
    Keyword::COLLATE,
];

/// Identifiers (quoted with backticks or not) of `[A-Za-z0-9_$]` only:
/// nothing a printer must escape, nothing that reads differently to MySQL
/// (a backslash, a backtick, a quote, a dot or a NUL inside a name),
/// nothing that looks like another name (Unicode confusables), no variables
/// (`@x`, `@@datadir`). Salt's schemas need nothing more.
fn check_word(value: &str, quote: Option<char>) -> Result<(), Denial> {
    if !matches!(quote, None | Some('`')) {
        return deny("literal", "quoted literals are not allowed: pass values as `?` parameters");
    }
    if value.starts_with('@') {
        return deny(format!("variable `{}`", printable(value)), format!("variable `{}` is not allowed", printable(value)));
    }
    if !is_plain_name(value) {
        return deny(
            format!("identifier `{}`", printable(value)),
            format!("identifier `{}` is not allowed: names are of A-Z, a-z, 0-9, `_` and `$` only", printable(value)),
        );
    }
    Ok(())
}

/// Whether `name` is a name a statement may use: not empty, of
/// `[A-Za-z0-9_$]` only.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// Decimal numbers only (`12`, `1.5`, `.5`, `1e3`): hexadecimal and binary
/// literals are strings to MySQL.
fn check_number(n: &str) -> Result<(), Denial> {
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(at) => (&n[..at], Some(n[at + 1..].trim_start_matches(['+', '-']))),
        None => (n, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => (int.is_empty() || digits(int)) && (frac.is_empty() || digits(frac)) && !(int.is_empty() && frac.is_empty()),
        None => digits(mantissa),
    };
    if mantissa_ok && exponent.is_none_or(digits) {
        Ok(())
    } else {
        deny(
            format!("number `{}`", printable(n)),
            format!("number `{}` is not allowed: only decimal numbers are", printable(n)),
        )
    }
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// Bytes of a guest's text quoted in a refusal, at most.
const QUOTED_BYTES: usize = 160;

/// A guest's text as it may appear in a refusal: on one line and at most
/// [`QUOTED_BYTES`] long ([`guest_text::bounded`]), so a refusal can
/// neither grow without bound nor forge log lines.
pub fn printable(text: &str) -> String {
    guest_text::bounded(text, QUOTED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_charset_are_refused() {
        for sql in [
            "SELECT `a\\` FROM jids",
            "SELECT `a``b` FROM jids",
            "SELECT `a b` FROM jids",
            "SELECT `a.b` FROM jids",
            "SELECT jid FROM `jids\u{0}`",
            "SELECT jíd FROM jids",
            "SELECT `` FROM jids",
        ] {
            let d = check(sql).expect_err(sql);
            assert!(d.reason.contains("names are of A-Z"), "{sql}: {d:?}");
        }
        assert_eq!(check("SELECT `a$1`, b_2 FROM `jids`").unwrap().tokens, 6);
    }

    #[test]
    fn numbers_are_decimal() {
        for ok in ["1", "1.5", ".5", "1.", "1e3", "1E-3", "12.5e+10"] {
            check_number(ok).unwrap_or_else(|d| panic!("{ok}: {d:?}"));
        }
        for bad in ["0x41", "0b1", "1e", "e1", ".", "1.2.3"] {
            assert!(check_number(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symbols_outside_the_allow_list_are_refused() {
        for sql in ["SELECT 1 || 2", "SELECT a->'$.x' FROM jids", "SELECT @x := 1", "SELECT 1 & 2", "SELECT ~1", "SELECT !1"] {
            assert!(check(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn operators_and_tokens_are_capped() {
        let chain = format!("SELECT 1{}", " + 1".repeat(MAX_OPERATORS + 1));
        assert!(check(&chain).unwrap_err().reason.contains("operators"));
        let list = format!("SELECT 1{}", ", 1".repeat(MAX_TOKENS));
        assert!(check(&list).unwrap_err().reason.contains("tokens"));
        let words = format!("SELECT 1 FROM jids WHERE{}", " NOT".repeat(MAX_OPERATORS + 1));
        assert!(check(&words).unwrap_err().reason.contains("operators"));
    }

    #[test]
    fn printable_escapes_control_characters_and_cuts() {
        assert_eq!(printable("a\nb"), "a\\nb");
        let cut = printable(&"x".repeat(200));
        assert!(cut.starts_with(&"x".repeat(QUOTED_BYTES)) && cut.ends_with("… (40 bytes cut)"), "{cut}");
    }
}
