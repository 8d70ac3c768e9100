//! Schedules: the seed's 5-field `cron` expressions and systemd
//! `OnCalendar=` expressions.
//!
//! The timer is a systemd timer, so cron is converted, never interpreted.
//! One cron line can need two `OnCalendar=` lines: when both day-of-month
//! and day-of-week are restricted, cron fires when *either* matches while
//! systemd requires *both*.

use std::collections::BTreeSet;

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const CRON_DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const CRON_MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &CRON_MONTHS,
};
// 7 is accepted as Sunday and folded to 0.
const DOW: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &CRON_DAYS,
};

/// Convert a cron expression (5 fields, or `@daily` and friends) into one
/// or two systemd `OnCalendar=` expressions.
pub fn cron_to_on_calendar(cron: &str) -> Result<Vec<String>, String> {
    let cron = cron.trim();
    if let Some(name) = cron.strip_prefix('@') {
        let cal = match name {
            "yearly" | "annually" => "*-01-01 00:00:00",
            "monthly" => "*-*-01 00:00:00",
            "weekly" => "Sun *-*-* 00:00:00",
            "daily" | "midnight" => "*-*-* 00:00:00",
            "hourly" => "*-*-* *:00:00",
            "reboot" => return Err("@reboot is not a calendar schedule".into()),
            _ => return Err(format!("unknown shorthand \"@{name}\"")),
        };
        return Ok(vec![cal.to_string()]);
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    let minute = parse_field(fields[0], &MINUTE)?;
    let hour = parse_field(fields[1], &HOUR)?;
    let dom = parse_field(fields[2], &DOM)?;
    let month = parse_field(fields[3], &MONTH)?;
    let mut dow = parse_field(fields[4], &DOW)?;
    if dow.remove(&7) {
        dow.insert(0);
    }
    let dom_any = fields[2].starts_with('*');
    let dow_any = fields[4].starts_with('*');

    let time = format!(
        "{}:{}:00",
        render(&hour, &HOUR, 2),
        render(&minute, &MINUTE, 2)
    );
    let month_s = render(&month, &MONTH, 2);
    let date = |dom: &str| format!("*-{month_s}-{dom}");
    let all_dom = render(&full(&DOM), &DOM, 2);
    let dom_s = render(&dom, &DOM, 2);
    let dow_s = render_days(&dow);

    Ok(match (dom_any, dow_any) {
        (_, true) => vec![format!("{} {time}", date(&dom_s))],
        (true, false) => vec![format!("{dow_s} {} {time}", date(&all_dom))],
        // Both restricted: cron ORs them, systemd ANDs: two expressions.
        (false, false) => vec![
            format!("{} {time}", date(&dom_s)),
            format!("{dow_s} {} {time}", date(&all_dom)),
        ],
    })
}

fn full(f: &Field) -> BTreeSet<u32> {
    (f.min..=f.max).collect()
}

fn parse_value(s: &str, f: &Field) -> Result<u32, String> {
    if let Some(i) = f.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        // Names count from the field's minimum: months from 1, days from 0.
        return Ok(i as u32 + f.min);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{}: \"{s}\" is not a number", f.name))?;
    if v < f.min || v > f.max {
        return Err(format!(
            "{}: {v} is out of range {}-{}",
            f.name, f.min, f.max
        ));
    }
    Ok(v)
}

fn parse_field(text: &str, f: &Field) -> Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("{}: bad step \"{s}\"", f.name))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, f)?, parse_value(b, f)?);
            if a > b {
                return Err(format!("{}: range {a}-{b} goes backwards", f.name));
            }
            (a, b)
        } else {
            let v = parse_value(range, f)?;
            // "5/15" means 5, 20, 35, 50 (as in Vixie cron).
            (v, if part.contains('/') { f.max } else { v })
        };
        if range.is_empty() {
            return Err(format!("{}: empty list item", f.name));
        }
        set.extend((lo..=hi).step_by(step as usize));
    }
    Ok(set)
}

/// Shortest systemd rendering of a set: `*`, `00/5`, `09..17`, `1,15`.
fn render(set: &BTreeSet<u32>, f: &Field, width: usize) -> String {
    if *set == full(f) {
        return "*".into();
    }
    let v: Vec<u32> = set.iter().copied().collect();
    let num = |n: u32| format!("{n:0width$}");
    // An arithmetic progression that runs to the end of the range: "start/step".
    if v.len() > 2 {
        let step = v[1] - v[0];
        let progression = v.windows(2).all(|w| w[1] - w[0] == step);
        if progression && v[v.len() - 1] + step > f.max {
            return format!("{}/{step}", num(v[0]));
        }
    }
    runs(&v)
        .into_iter()
        .map(|(a, b)| match b - a {
            0 => num(a),
            1 => format!("{},{}", num(a), num(b)),
            _ => format!("{}..{}", num(a), num(b)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render_days(set: &BTreeSet<u32>) -> String {
    // systemd weeks start on Monday: rotate Sunday to the end so that
    // "Fri..Sun" stays one range.
    let mut days: Vec<u32> = set.iter().map(|&d| (d + 6) % 7).collect();
    days.sort_unstable();
    let name = |d: u32| DAY_NAMES[((d + 1) % 7) as usize];
    runs(&days)
        .into_iter()
        .map(|(a, b)| match b - a {
            0 => name(a).to_string(),
            1 => format!("{},{}", name(a), name(b)),
            _ => format!("{}..{}", name(a), name(b)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn runs(v: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == x => *b = x,
            _ => out.push((x, x)),
        }
    }
    out
}

const SHORTHANDS: [&str; 10] = [
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
    "semi-annually",
];

/// Check the shape of a systemd calendar expression (`systemd.time(7)`):
/// a shorthand like `daily`, or `[weekdays] [date] [time] [timezone]`.
/// This catches typos at config-check time; systemd remains the judge.
pub fn validate_on_calendar(expr: &str) -> Result<(), String> {
    let e = expr.trim();
    if e.is_empty() {
        return Err("empty calendar expression".into());
    }
    if SHORTHANDS.contains(&e.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let mut tokens: Vec<&str> = e.split_whitespace().collect();
    // A trailing timezone ("UTC", "Europe/Berlin").
    if let Some(last) = tokens.last()
        && tokens.len() > 1
        && (last.eq_ignore_ascii_case("utc") || last.contains('/') && !last.contains(':'))
        && last.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
    {
        tokens.pop();
    }
    let mut seen_date = false;
    let mut seen_time = false;
    for (i, tok) in tokens.iter().enumerate() {
        if tok.contains(':') {
            if seen_time {
                return Err(format!("two times in \"{e}\""));
            }
            seen_time = true;
            check_components(tok, ':', 2..=3, "time", e)?;
        } else if tok.contains('-') && tok.chars().next().is_some_and(|c| !c.is_ascii_alphabetic())
        {
            if seen_date || seen_time {
                return Err(format!("the date must come before the time in \"{e}\""));
            }
            seen_date = true;
            check_components(tok, '-', 2..=3, "date", e)?;
        } else if i == 0 && tok.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            for day in tok.split([',', '.', '-']).filter(|d| !d.is_empty()) {
                if !DAY_NAMES.iter().any(|n| {
                    day.len() >= 3
                        && full_day_name(n)
                            .to_ascii_lowercase()
                            .starts_with(&day.to_ascii_lowercase())
                }) {
                    return Err(format!("\"{day}\" is not a weekday in \"{e}\""));
                }
            }
        } else {
            return Err(format!(
                "cannot read \"{tok}\" in \"{e}\"; expected e.g. \"daily\", \"Mon..Fri 08:00\" or \"*-*-* 03:00:00\""
            ));
        }
    }
    // Weekdays alone are fine too: midnight on those days.
    Ok(())
}

fn full_day_name(short: &str) -> &'static str {
    match short {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    }
}

fn check_components(
    tok: &str,
    sep: char,
    count: std::ops::RangeInclusive<usize>,
    what: &str,
    expr: &str,
) -> Result<(), String> {
    let parts: Vec<&str> = tok.split(sep).collect();
    // "*-*-1~7" style "last days" use '~' instead of '-'.
    if !(count.contains(&parts.len()) || what == "date" && tok.contains('~')) {
        return Err(format!("malformed {what} \"{tok}\" in \"{expr}\""));
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | ',' | '.' | '/' | '~'));
        if !ok {
            return Err(format!("malformed {what} \"{tok}\" in \"{expr}\""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(cron: &str) -> String {
        let v = cron_to_on_calendar(cron).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn converts_common_cron_lines() {
        assert_eq!(one("0 3 * * *"), "*-*-* 03:00:00");
        assert_eq!(one("*/5 * * * *"), "*-*-* *:00/5:00");
        assert_eq!(one("15 9-17 * * 1-5"), "Mon..Fri *-*-* 09..17:15:00");
        assert_eq!(one("0 0 1 */3 *"), "*-01/3-01 00:00:00");
        assert_eq!(one("0,30 8 * jan,jul sun"), "Sun *-01,07-* 08:00,30:00");
        assert_eq!(one("0 12 * * 5-7"), "Fri..Sun *-*-* 12:00:00");
        assert_eq!(one("5/15 * * * *"), "*-*-* *:05/15:00");
        assert_eq!(one("1-10/3 * * * *"), "*-*-* *:01,04,07,10:00");
        assert_eq!(one("@daily"), "*-*-* 00:00:00");
        assert_eq!(one("@hourly"), "*-*-* *:00:00");
    }

    #[test]
    fn both_day_fields_restricted_gives_two_lines() {
        assert_eq!(
            cron_to_on_calendar("0 6 1 * mon").unwrap(),
            vec!["*-*-01 06:00:00", "Mon *-*-* 06:00:00"]
        );
    }

    #[test]
    fn rejects_bad_cron() {
        for (bad, why) in [
            ("0 3 * *", "expected 5 fields"),
            ("60 * * * *", "out of range"),
            ("* 24 * * *", "out of range"),
            ("*/0 * * * *", "bad step"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
            ("@reboot", "not a calendar"),
            ("0 0 * foo *", "not a number"),
        ] {
            let err = cron_to_on_calendar(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn on_calendar_shapes() {
        for good in [
            "daily",
            "hourly",
            "*-*-* 03:00:00",
            "Mon..Fri 08:00",
            "Sat,Sun *-*-* 10:00:00 UTC",
            "*:0/15",
            "2026-12-24 18:00",
            "*-*-1~7 04:00 Europe/Berlin",
            "Monday 09:00",
        ] {
            assert_eq!(validate_on_calendar(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "sometimes",
            "Mon..Fry 08:00",
            "25 o'clock",
            "*-*-* 03:00:00 04:00",
        ] {
            assert!(validate_on_calendar(bad).is_err(), "{bad}");
        }
    }
}
