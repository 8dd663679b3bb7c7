//! UTC calendar times without a date library: what lock files record as the
//! time a lock was taken (`2026-11-29T15:04:05Z`), and what XML-RPC's
//! `dateTime.iso8601` carries (`20261129T15:04:05`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The time at `seconds` since the Unix epoch.
pub fn from_unix_seconds(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

impl Utc {
    pub fn from_system(time: SystemTime) -> Utc {
        let seconds = unix_seconds(time);
        let days = seconds.div_euclid(86_400);
        let rest = u32::try_from(seconds.rem_euclid(86_400)).unwrap_or(0);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
        let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }

    pub fn to_system(self) -> SystemTime {
        // Howard Hinnant's days_from_civil.
        let year = self.year - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400);
        let month = i64::from(self.month);
        let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5
            + i64::from(self.day)
            - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let seconds = days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        from_unix_seconds(seconds)
    }

    /// RFC 3339, as lock files record it: `2026-11-29T15:04:05Z`.
    pub fn rfc3339(&self) -> String {
        self.to_string()
    }

    /// XML-RPC's `dateTime.iso8601`: `20261129T15:04:05`.
    pub fn iso8601_basic(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Parse what [`Utc::rfc3339`] writes, and nothing else.
    pub fn parse_rfc3339(text: &str) -> Option<Utc> {
        Utc::parse_as(text, "YYYY-MM-DDThh:mm:ssZ")
    }

    /// Parse what [`Utc::iso8601_basic`] writes, and nothing else.
    pub fn parse_iso8601_basic(text: &str) -> Option<Utc> {
        Utc::parse_as(text, "YYYYMMDDThh:mm:ss")
    }

    /// Parse `text` laid out as `pattern`: `Y`, `M`, `D`, `h`, `m` and `s`
    /// stand for digits of the year, month, day, hour, minute and second;
    /// any other character must be there as it is.
    fn parse_as(text: &str, pattern: &str) -> Option<Utc> {
        if text.len() != pattern.len() {
            return None;
        }
        let mut fields = [0u32; 6];
        for (c, p) in text.bytes().zip(pattern.bytes()) {
            let Some(slot) = b"YMDhms".iter().position(|&f| f == p) else {
                if c != p {
                    return None;
                }
                continue;
            };
            if !c.is_ascii_digit() {
                return None;
            }
            fields[slot] = fields[slot] * 10 + u32::from(c - b'0');
        }
        let [year, month, day, hour, minute, second] = fields;
        let utc = Utc {
            year: i64::from(year),
            month,
            day,
            hour,
            minute,
            second,
        };
        let valid = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60
            && Utc::from_system(utc.to_system()) == utc;
        valid.then_some(utc)
    }
}

/// [`Utc::rfc3339`], written where it goes (a log line) without a string
/// of its own.
impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let t = Utc::from_system(from_unix_seconds(1_796_396_645));
        assert_eq!(t.rfc3339(), "2026-12-04T15:04:05Z");
        assert_eq!(t.iso8601_basic(), "20261204T15:04:05");
        assert_eq!(
            Utc::from_system(UNIX_EPOCH).rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Utc::from_system(from_unix_seconds(951_782_400)).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn round_trip() {
        for seconds in [
            0,
            1,
            86_399,
            86_400,
            951_868_799,
            1_796_396_645,
            4_102_444_800,
            -1,
            -86_401,
        ] {
            let t = Utc::from_system(from_unix_seconds(seconds));
            assert_eq!(unix_seconds(t.to_system()), seconds);
            assert_eq!(
                Utc::parse_rfc3339(&t.rfc3339()).filter(|_| seconds >= 0),
                (seconds >= 0).then_some(t)
            );
        }
    }

    #[test]
    fn the_xmlrpc_form_parses_too() {
        let t = Utc::parse_iso8601_basic("20261129T15:04:05").unwrap();
        assert_eq!(t.rfc3339(), "2026-11-29T15:04:05Z");
        for text in [
            "2026112T15:04:05",
            "20261129 15:04:05",
            "20261329T15:04:05",
            "2026-11-29T15:04:05Z",
        ] {
            assert_eq!(Utc::parse_iso8601_basic(text), None, "{text}");
        }
    }

    #[test]
    fn parse_rejects_junk() {
        for text in [
            "",
            "2026-11-29T15:04:05",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-29 15:04:05Z",
            "2026-11-29T15:04:+5Z",
        ] {
            assert_eq!(Utc::parse_rfc3339(text), None, "{text}");
        }
    }
}
