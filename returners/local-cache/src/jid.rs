//! Salt job ids: where a job lives in the cache, making new ids, and reading
//! the start time back out of one (Salt's `salt.utils.jid`).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Abbreviated month names, indexed like Python's `calendar.month_abbr`.
const MONTH_ABBR: [&str; 13] = [
    "", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The job's directory relative to the cache root: `<hex[..2]>/<hex[2..]>` of
/// the sha256 of the jid, like Salt's `jid_dir` with `hash_type: sha256`.
/// Hashing also means a jid never becomes a path of its own.
pub fn jid_dir(jid: &str) -> PathBuf {
    let hex: String = Sha256::digest(jid.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    PathBuf::from(&hex[..2]).join(&hex[2..])
}

/// A new jid for `now` in Salt's format `%Y%m%d%H%M%S%f` (20 digits).
///
/// Salt uses the master's local time; a guest has no time zone, so this is
/// UTC (what Salt does with `utc_jid: True`).
pub fn gen_jid(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let secs_of_day = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:06}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_micros(),
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// When the job started, read from its jid the way Salt's `jid_to_time`
/// does: `"2026, Nov 23 08:43:00.320186"` for `20261123084300320186`.
///
/// `""` for a jid that is not 20 characters (nor longer with `_` after the
/// 20th, Salt's `unique_jid` form), and, where Salt would raise, for one
/// whose first 20 characters are not digits or whose month is past 12.
pub fn jid_to_time(jid: &str) -> String {
    let bytes = jid.as_bytes();
    let well_formed = bytes.len() == 20 || (bytes.len() > 21 && bytes[20] == b'_');
    if !well_formed || !bytes[..20].iter().all(u8::is_ascii_digit) {
        return String::new();
    }
    let Some(month) = jid[4..6]
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTH_ABBR.get(m))
    else {
        return String::new();
    };
    format!(
        "{}, {month} {} {}:{}:{}.{}",
        &jid[..4],
        &jid[6..8],
        &jid[8..10],
        &jid[10..12],
        &jid[12..14],
        &jid[14..20],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jid_dir_splits_the_sha256_hex_after_two_digits() {
        // Values from Python: hashlib.sha256(jid.encode()).hexdigest().
        assert_eq!(
            jid_dir("20261123084300320186"),
            PathBuf::from("96")
                .join("8d6e2e57d69f5cdb85c5b07133322b349f5315e83ed7f7a110aaa11f1d5751")
        );
        assert_eq!(
            jid_dir("abc"),
            PathBuf::from("ba")
                .join("7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(jid_dir("../../etc").components().count(), 2);
    }

    #[test]
    fn jid_to_time_matches_salt() {
        assert_eq!(
            jid_to_time("20261123084300320186"),
            "2026, Nov 23 08:43:00.320186"
        );
        assert_eq!(
            jid_to_time("20260101000000000000_1234"),
            "2026, Jan 01 00:00:00.000000"
        );
        assert_eq!(
            jid_to_time("20260001000000000000"),
            "2026,  01 00:00:00.000000"
        );
    }

    #[test]
    fn jid_to_time_is_empty_where_salt_gives_up_or_would_raise() {
        assert_eq!(jid_to_time(""), "");
        assert_eq!(jid_to_time("req"), "");
        assert_eq!(jid_to_time("2026112308430032018"), "");
        assert_eq!(jid_to_time("202611230843003201860"), "");
        assert_eq!(jid_to_time("20261123084300320186_"), "");
        assert_eq!(jid_to_time("20261123084300320186x1"), "");
        assert_eq!(jid_to_time("2026x123084300320186"), "");
        assert_eq!(jid_to_time("20261323084300320186"), "");
        assert_eq!(jid_to_time("2026112308430032018é"), "");
    }

    #[test]
    fn gen_jid_formats_utc_with_microseconds() {
        assert_eq!(gen_jid(UNIX_EPOCH), "19700101000000000000");
        // 2026-11-23T08:43:00.320186Z
        let at = UNIX_EPOCH + Duration::new(1_795_423_380, 320_186_999);
        assert_eq!(gen_jid(at), "20261123084300320186");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(gen_jid(leap), "20000229235959000000");
        assert_eq!(jid_to_time(&gen_jid(at)), "2026, Nov 23 08:43:00.320186");
    }
}
