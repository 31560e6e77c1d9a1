//! Job ids for a run of the suite: fresh, in Salt's format, and increasing,
//! so a run against a backend that keeps data (etcd, MySQL) never meets the
//! jobs of an earlier run, and its jobs are the newest ones there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Hands out jids one microsecond apart, from the time the run started.
pub(super) struct JidSource {
    start: SystemTime,
    issued: u32,
}

impl JidSource {
    pub(super) fn new() -> Self {
        Self { start: SystemTime::now(), issued: 0 }
    }

    /// A jid no earlier call handed out, later than every one it did.
    pub(super) fn next(&mut self) -> String {
        self.issued += 1;
        format_jid(self.start + Duration::from_micros(u64::from(self.issued)))
    }
}

/// Salt's `%Y%m%d%H%M%S%f`, in UTC.
fn format_jid(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:06}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// Year, month and day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, doy - (153 * mp + 2) / 5 + 1)
}

/// The `StartTime` Salt's jobs runner shows for a 20-digit jid
/// (`salt.utils.jid.jid_to_time`): `2026, Nov 23 08:43:00.320186`.
pub(super) fn start_time(jid: &str) -> Option<String> {
    let digits = jid.get(..20).filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
    let month = MONTHS.get(digits[4..6].parse::<usize>().ok()?.checked_sub(1)?)?;
    Some(format!(
        "{}, {month} {} {}:{}:{}.{}",
        &digits[..4],
        &digits[6..8],
        &digits[8..10],
        &digits[10..12],
        &digits[12..14],
        &digits[14..20]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_are_salts_format_and_increase() {
        let at = UNIX_EPOCH + Duration::from_micros(1_795_423_380_320_186);
        assert_eq!(format_jid(at), "20261123084300320186");
        let mut source = JidSource::new();
        let (a, b) = (source.next(), source.next());
        assert_eq!(a.len(), 20);
        assert!(a < b);
    }

    #[test]
    fn start_time_is_salts_jid_to_time() {
        assert_eq!(start_time("20261123084300320186").as_deref(), Some("2026, Nov 23 08:43:00.320186"));
        assert_eq!(start_time("20261323084300320186"), None);
        assert_eq!(start_time("req"), None);
    }
}
