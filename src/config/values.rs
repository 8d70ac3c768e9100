//! Parsing of human-written values: durations and sizes.
//!
//! Nothing here can overflow: a value too large to represent comes out as
//! the largest one (`Duration::MAX`, `u64::MAX`), which every key's
//! documented maximum then refuses (`validate`).

use std::time::Duration;

/// Parse `"90s"`, `"15m"`, `"1h30m"`, `"2min"`, `"500ms"`, `"1d"` (the
/// units systemd accepts). A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Only too many digits fail here.
        return Ok(s.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number \"{}\"", &rest[..digits]))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ms" | "msec" => 0.001,
            "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            "" => return Err(format!("missing unit after {number}")),
            other => return Err(format!("unknown unit \"{other}\"")),
        };
        // Digits and dots only: never negative or NaN; too large (or
        // infinite) saturates.
        let part = Duration::try_from_secs_f64(number * scale).unwrap_or(Duration::MAX);
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Render a duration the way a user would write it (`"15m"`, `"1h30m"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Parse `"256MiB"`, `"1GiB"`, `"512K"` (binary), `"10MB"` (decimal), or
/// a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err("a size cannot be negative".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if split == 0 {
        return Err("expected a number".into());
    }
    let number: f64 = s[..split]
        .parse()
        .map_err(|_| format!("bad number \"{}\"", &s[..split]))?;
    let scale: u64 = match s[split..].trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown unit \"{other}\"")),
    };
    let bytes = number * scale as f64;
    if bytes.is_finite() && bytes.fract() != 0.0 {
        return Err(format!("{bytes} is not a whole number of bytes"));
    }
    // `as` saturates: too large (or infinite) is u64::MAX.
    Ok(bytes as u64)
}

/// Render a size with the largest exact binary unit (`"256MiB"`).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("15x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("15").is_ok());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 5").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn extreme_durations_saturate_or_fail_never_panic() {
        for huge in [
            "99999999999999999999999w",
            "18446744073709551616",
            "18446744073709551615w",
            &format!("{}s", "9".repeat(400)),
            "9223372036854775807d 9223372036854775807d",
        ] {
            assert_eq!(parse_duration(huge), Ok(Duration::MAX), "{huge}");
        }
        assert_eq!(
            parse_duration("18446744073709551615"),
            Ok(Duration::from_secs(u64::MAX))
        );
        for bad in ["-5", "-1s", "1e300s", "nan s", "inf", "1.5", "."] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("0.0001ms"), Ok(Duration::from_nanos(100)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn extreme_sizes_saturate_or_fail_never_panic() {
        assert_eq!(parse_size("99999999999999999999TiB"), Ok(u64::MAX));
        assert_eq!(parse_size(&"9".repeat(400)), Ok(u64::MAX));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        for bad in ["-1", "-1MiB", "1e300", "nan", "", "1.5", "0.3K"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
