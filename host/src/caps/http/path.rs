//! What an http request may say, checked before anything is sent: the
//! profile's base URL, the guest's path (normalised: no `..`, no encoded
//! tricks, never a scheme or a host), the grant's path patterns and the
//! headers. Pure; unit- and property-tested.

use url::Url;

/// Most headers a guest may add to one request.
pub const MAX_GUEST_HEADERS: usize = 64;
/// Most bytes of names and values of the headers a guest adds to one request.
pub const MAX_GUEST_HEADER_BYTES: usize = 16 * 1024;
/// Longest path and query a guest may ask for.
pub const MAX_PATH_BYTES: usize = 4096;

/// Headers that say where or how a request travels, or make a server treat
/// it as another request (another host, another method, another client).
/// Neither a profile nor a guest may set them: the host's HTTP client does.
const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-connection",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Header name prefixes refused for the same reason.
const TRANSPORT_PREFIXES: &[&str] = &["proxy-", "x-forwarded-", ":"];

/// A profile's base URL: where every request of the profile goes.
#[derive(Clone, Debug)]
pub struct Base {
    /// The URL, with its path's trailing `/` removed.
    pub url: Url,
    /// Its path without a trailing `/` (`""` for the root).
    pub path: String,
}

/// Parse and check a profile's `base_url`: `https://` (or `http://` when
/// allowed), a host, no credentials, query or fragment.
pub fn base_url(text: &str, allow_plain_http: bool) -> Result<Base, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => return Err("an http:// URL sends its secret headers unencrypted; use https://, or set `allow_plain_http = true`".into()),
        other => return Err(format!("scheme `{other}` is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; put them in `headers` (e.g. Authorization from a file)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment; a guest's path may carry a query".into());
    }
    let path = url.path().trim_end_matches('/').to_owned();
    Ok(Base { url, path })
}

/// A guest's path and query, checked: the path is `""` or starts with `/`,
/// has no empty (`//`), `.` or `..` segment, and only characters that mean
/// themselves. Refused: a scheme or host (`https://x`, `//x`), `#`,
/// backslashes, spaces, control and non-ASCII characters, and percent
/// escapes of `/`, `\`, `.`, `%` or a control character (the encodings
/// servers disagree on).
pub fn normalise(text: &str) -> Result<(String, Option<String>), String> {
    if text.len() > MAX_PATH_BYTES {
        return Err(format!("the path is {} bytes; at most {MAX_PATH_BYTES}", text.len()));
    }
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    if !path.is_empty() && !path.starts_with('/') {
        return Err("a path starts with `/` and names no scheme or host; the profile says where requests go".into());
    }
    check_chars(path, false)?;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "" if i + 1 < segments.len() => return Err("an empty segment (`//`) is not a path".into()),
            "." | ".." => return Err(format!("a `{segment}` segment is not allowed")),
            _ => {}
        }
    }
    if let Some(q) = query {
        check_chars(q, true)?;
    }
    Ok((path.to_owned(), query.map(str::to_owned)))
}

/// Every character of a path (or query) means itself.
fn check_chars(text: &str, query: bool) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let Some(decoded) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    return Err("a `%` must start a percent escape of two hex digits".into());
                };
                if !query && (matches!(decoded, b'/' | b'\\' | b'.' | b'%') || decoded < 0x20 || decoded == 0x7f) {
                    return Err(format!("a percent-encoded {:?} is not allowed in a path", decoded as char));
                }
                i += 3;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' => {}
            b'?' if query => {}
            b'#' => return Err("a fragment (`#`) is not sent; leave it out".into()),
            b'\\' => return Err("a backslash is not allowed; some servers read it as `/`".into()),
            _ if b.is_ascii_control() || b == b' ' => {
                return Err(format!("character {:?} must be percent-encoded", b as char));
            }
            _ => return Err(format!("character {:?} must be percent-encoded", String::from_utf8_lossy(&bytes[i..]).chars().next().unwrap_or('?'))),
        }
        i += 1;
    }
    Ok(())
}

/// One path pattern of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<String>,
}

impl PathPattern {
    /// Parse a pattern: a path as [`normalise`] takes it, no query, where a
    /// segment `*` stands for any one segment and a last segment `**` for
    /// any number.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('?') {
            return Err(format!("pattern `{text}`: a path pattern has no query"));
        }
        let (path, _) = normalise(text).map_err(|m| format!("pattern `{text}`: {m}"))?;
        let segments: Vec<String> = path.split('/').skip(1).map(str::to_owned).collect();
        for (i, s) in segments.iter().enumerate() {
            if s == "**" && i + 1 != segments.len() {
                return Err(format!("pattern `{text}`: `**` may only be the last segment"));
            }
            if s.contains('*') && s != "*" && s != "**" {
                return Err(format!("pattern `{text}`: `*` stands for a whole segment (`/a/*/c`), not part of one"));
            }
        }
        Ok(Self { text: text.to_owned(), segments })
    }

    /// Whether a normalised path (no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let got: Vec<&str> = path.split('/').skip(1).collect();
        let mut i = 0;
        for (n, want) in self.segments.iter().enumerate() {
            if want == "**" && n + 1 == self.segments.len() {
                return true;
            }
            match got.get(i) {
                Some(seg) if want == "*" && !seg.is_empty() => {}
                Some(seg) if want == seg => {}
                _ => return false,
            }
            i += 1;
        }
        i == got.len()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A header name is an HTTP token.
fn check_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("`{}` is not a header name", name.escape_debug()));
    }
    Ok(())
}

fn is_transport(lower: &str) -> bool {
    TRANSPORT_HEADERS.contains(&lower) || TRANSPORT_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// A header a profile adds may not be one the HTTP client owns.
pub fn check_profile_header(name: &str) -> Result<(), String> {
    check_name(name)?;
    if is_transport(&name.to_ascii_lowercase()) {
        return Err(format!("header `{name}` says where or how a request travels; the host's HTTP client sets it"));
    }
    Ok(())
}

/// A header a guest adds: a token name that neither the profile nor the
/// transport owns, and a value of visible ASCII, spaces and tabs.
pub fn check_guest_header(name: &str, value: &str, profile_headers: &[String]) -> Result<(), String> {
    check_name(name)?;
    let lower = name.to_ascii_lowercase();
    if is_transport(&lower) {
        return Err(format!("header `{name}` says where or how a request travels; the host sets it"));
    }
    if profile_headers.iter().any(|h| h.eq_ignore_ascii_case(&lower)) {
        return Err(format!("header `{name}` is the profile's; a returner cannot set or replace it"));
    }
    if let Some(bad) = value.bytes().find(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b))) {
        return Err(format!("header `{name}`: byte 0x{bad:02x} is not allowed in a value (no CR, LF, NUL or non-ASCII)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in ["", "/", "/services/collector/event", "/salt-test-ping-v1/_doc/20261123084300320186", "/a/b/", "/a:b@c/~x_y-z.json"] {
            assert_eq!(normalise(p).unwrap(), (p.to_owned(), None), "{p}");
        }
        assert_eq!(normalise("/i/_doc?refresh=true&x=a/b?c").unwrap(), ("/i/_doc".into(), Some("refresh=true&x=a/b?c".into())));
        assert_eq!(normalise("?q=1").unwrap(), ("".into(), Some("q=1".into())));
        assert_eq!(normalise("/caf%C3%A9").unwrap().0, "/caf%C3%A9");
    }

    #[test]
    fn escapes_are_refused() {
        for p in [
            "https://evil.example/x",
            "//evil.example/x",
            "evil.example/x",
            "http:/x",
            "/a/../b",
            "/..",
            "/a/./b",
            "/a//b",
            "/%2e%2e/x",
            "/.%2E/x",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\..\\b",
            "/a%252e%252e",
            "/a%00",
            "/a%0d%0aHost:%20evil",
            "/a\r\nHost: evil",
            "/a b",
            "/a#frag",
            "/a?x#frag",
            "/é",
            "/a%",
            "/a%zz",
            "/a?q=\n",
            "@evil.example/x",
        ] {
            assert!(normalise(p).is_err(), "{p:?} was accepted");
        }
    }

    #[test]
    fn patterns_match_whole_segments() {
        let p = PathPattern::parse("/services/collector/event").unwrap();
        assert!(p.matches("/services/collector/event"));
        assert!(!p.matches("/services/collector/event/x"));
        assert!(!p.matches("/services/collector/"));
        assert!(!p.matches("/services/collector/event/"));
        let p = PathPattern::parse("/*/_doc/*").unwrap();
        assert!(p.matches("/salt-test-ping-v1/_doc/123"));
        assert!(!p.matches("/salt/_doc/"));
        assert!(!p.matches("/_doc/1"));
        assert!(!p.matches("/a/_bulk/1"));
        let p = PathPattern::parse("/api/**").unwrap();
        assert!(p.matches("/api") && p.matches("/api/") && p.matches("/api/a/b/c"));
        assert!(!p.matches("/apix") && !p.matches("/ap"));
        assert!(PathPattern::parse("").unwrap().matches(""));
        assert!(!PathPattern::parse("").unwrap().matches("/x"));
        for bad in ["/a/**/b", "/a*", "/a/../b", "x", "/a?b"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_urls_are_checked() {
        let b = base_url("https://splunk.example:8088/", false).unwrap();
        assert_eq!((b.url.host_str(), b.url.port(), b.path.as_str()), (Some("splunk.example"), Some(8088), ""));
        assert_eq!(base_url("https://hooks.example/services/T0/B0/xyz", false).unwrap().path, "/services/T0/B0/xyz");
        for bad in ["http://a", "ftp://a", "https://u:p@a", "https://a/?x=1", "https://a/#f", "not a url", "https://"] {
            assert!(base_url(bad, false).is_err(), "{bad}");
        }
        assert!(base_url("http://127.0.0.1:9", true).is_ok());
    }

    #[test]
    fn headers_are_checked() {
        let profile = vec!["authorization".to_owned()];
        assert!(check_guest_header("Content-Type", "application/json", &profile).is_ok());
        for (n, v) in [
            ("Host", "evil"),
            ("host", "evil"),
            ("Authorization", "x"),
            ("AUTHORIZATION", "x"),
            ("Content-Length", "0"),
            ("Transfer-Encoding", "chunked"),
            ("X-Forwarded-Host", "evil"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("Proxy-Authorization", "x"),
            ("X-A", "v\r\nHost: evil"),
            ("X-A", "v\n"),
            ("X-A", "v\0"),
            ("X-A", "é"),
            ("X-A\r\nHost", "v"),
            ("", "v"),
            ("X A", "v"),
            (":authority", "evil"),
        ] {
            assert!(check_guest_header(n, v, &profile).is_err(), "{n:?}: {v:?} was accepted");
        }
        assert!(check_profile_header("Host").is_err());
        assert!(check_profile_header("Authorization").is_ok());
    }

    proptest! {
        /// Whatever a guest writes, a path that passes has no segment a
        /// server could read as a step up or sideways, and carries no host.
        #[test]
        fn what_passes_cannot_leave_the_base(text in "[/a-z.%25fFeE2cC5\\\\?#:@ ]{0,24}") {
            if let Ok((path, query)) = normalise(&text) {
                prop_assert!(path.is_empty() || path.starts_with('/'));
                prop_assert!(!path.starts_with("//"));
                let decoded = percent_decode(&path);
                for seg in decoded.split('/').skip(1) {
                    prop_assert!(seg != "." && seg != "..", "{text:?} decodes to a dot segment");
                }
                prop_assert!(!decoded.contains('\\') && !decoded.contains('#'));
                prop_assert!(!decoded.contains('%'), "{text:?} double-encodes");
                // The URL parser keeps it as written: what was checked is sent.
                let base = base_url("https://h.example:8088/base", false).unwrap();
                let mut url = base.url.clone();
                url.set_path(&format!("{}{}", base.path, path));
                url.set_query(query.as_deref());
                prop_assert_eq!(url.host_str(), Some("h.example"));
                prop_assert_eq!(url.port(), Some(8088));
                let want = format!("/base{path}");
                prop_assert_eq!(url.path(), want.as_str());
            }
        }
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() + 1 {
                if let Some(v) = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
