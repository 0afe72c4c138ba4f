//! Times as installers' files and devices write them: unix seconds or milliseconds, a date, or
//! RFC 3339. Outside text: every malformed form is `None`, never a panic.

/// Unix seconds or ms, `YYYY-MM-DD` (end of day, UTC+8), or RFC 3339 with `Z` or an offset.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        // Ten-digit numbers are seconds until the year 2286; milliseconds have thirteen.
        return Some(if n.abs() < 100_000_000_000 {
            n * 1000
        } else {
            n
        });
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    const CST: i64 = 8 * 3_600_000;
    if b.len() == 10 {
        return Some(day_ms + 86_400_000 - 1 - CST);
    }
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        let ms: String = f[..digits].chars().chain("000".chars()).take(3).collect();
        frac_ms = ms.parse().ok()?;
        rest = &f[digits..];
    }
    let offset_ms = match rest {
        "Z" | "z" => 0,
        // A device's local time without its zone (ZKTeco's `2026-11-29 13:00:00`): China's.
        "" => CST,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            // `get`, not slicing: a device's text may hold any UTF-8 here.
            if o.get(3..4) != Some(":") {
                return None;
            }
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3_600_000
                + o.get(4..6)?.parse::<i64>().ok()? * 60_000)
        }
        _ => return None,
    };
    Some(day_ms + h * 3_600_000 + mi * 60_000 + sec * 1000 + frac_ms - offset_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
/// Unix ms as RFC 3339 in UTC, to the second (`2026-11-29T05:00:00+00:00`), as device APIs
/// take times.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_back() {
        for ms in [0, 1_795_928_400_000, 951_782_400_000, 4_102_444_799_000] {
            assert_eq!(parse_time_ms(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(rfc3339(1_795_928_400_000), "2026-11-29T05:00:00+00:00");
        assert_eq!(
            parse_time_ms("2026-11-29 13:00:00"),
            Some(1_795_928_400_000)
        );
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time_ms("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time_ms("2023-11-15T06:13:20.5+08:00"),
            Some(1_700_000_000_500)
        );
        // The end of 1 Jan 1970 in UTC+8 is 16:00 UTC that day.
        assert_eq!(parse_time_ms("1970-01-01"), Some(16 * 3_600_000 - 1));
        assert_eq!(parse_time_ms("2024-13-01"), None);
        assert_eq!(parse_time_ms("tomorrow"), None);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20+0é:0"), None);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20.9é"), None);
    }
}
