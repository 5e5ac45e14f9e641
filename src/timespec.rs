//! Points in time and durations as operators type them: RFC 3339 (`2026-11-27T03:00:00Z`,
//! `2026-11-27T04:00:00+01:00`) or "that long ago" (`90m`, `2h`, `3d`, `1w`). Pure: `now`
//! is always passed in, so callers and tests decide what the clock says.

use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};

/// A duration such as `45s`, `90m`, `2h`, `3d`, `1w`, or combined (`1d12h`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Config(format!(
            "`{text}` is not a duration: use a number and a unit, e.g. 90m, 2h, 3d or 1w \
             (units s, m, h, d, w)"
        ))
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let part = match c {
            's' => Duration::try_seconds(n),
            'm' => Duration::try_minutes(n),
            'h' => Duration::try_hours(n),
            'd' => Duration::try_days(n),
            'w' => Duration::try_weeks(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(&part).ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// `--at` values: RFC 3339, or a duration meaning that long before `now`.
pub fn parse_point_in_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    match parse_duration(text) {
        Ok(ago) => now.checked_sub_signed(ago).ok_or_else(|| {
            Error::Config(format!("`{text}` reaches before any representable time"))
        }),
        Err(_) => Err(Error::Config(format!(
            "`{text}` is not a time: use RFC 3339 (2026-11-27T03:00:00Z, or with an offset \
             such as +01:00) or how long ago (90m, 2h, 3d, 1w)"
        ))),
    }
}

/// "3d 4h", "5h 12m", "42s": the two largest units, for messages.
pub fn describe(duration: Duration) -> String {
    let negative = duration < Duration::zero();
    let secs = duration.num_seconds().unsigned_abs();
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Only adjacent units: "1d 0h" reads better as "1d".
            break;
        }
    }
    let text = if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    };
    if negative { format!("-{text}") } else { text }
}

/// `2026-11-27T03:00:00Z`: how times are shown to operators.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn durations_in_every_unit_and_combined() {
        let cases = [
            ("45s", 45),
            ("90m", 5_400),
            ("2h", 7_200),
            ("3d", 259_200),
            ("1w", 604_800),
            ("1d12h", 129_600),
            (" 30d ", 2_592_000),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text).unwrap().num_seconds(), secs, "{text}");
        }
        for bad in ["", "2", "h", "2x", "-2h", "2h30", "1.5h"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("e.g. 90m"), "{bad}: {err}");
        }
    }

    #[test]
    fn points_in_time_absolute_with_offsets_and_relative() {
        assert_eq!(
            parse_point_in_time("2026-11-27T03:00:00Z", now()).unwrap(),
            "2026-11-27T03:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_point_in_time("2026-11-27T04:00:00+01:00", now()).unwrap(),
            "2026-11-27T03:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_point_in_time("2h", now()).unwrap(),
            "2026-11-27T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_point_in_time("3d", now()).unwrap(),
            "2026-11-24T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let err = parse_point_in_time("yesterday", now()).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn descriptions_keep_two_adjacent_units() {
        assert_eq!(describe(Duration::seconds(42)), "42s");
        assert_eq!(
            describe(Duration::seconds(5 * 3600 + 12 * 60 + 9)),
            "5h 12m"
        );
        assert_eq!(describe(Duration::days(1)), "1d");
        assert_eq!(describe(Duration::seconds(86_400 + 60)), "1d");
        assert_eq!(describe(Duration::zero()), "0s");
        assert_eq!(describe(Duration::seconds(-90)), "-1m 30s");
    }
}
