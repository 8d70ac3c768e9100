//! Text helpers shared by the capabilities: the variable parts of log and
//! test output normalised away (a failure's signature, a check failure seen
//! again), and a stable hash for store keys.

/// Replace what differs between two runs of the same failure: every token
/// that holds a digit and is otherwise made of hex digits and the
/// separators of times, dates, addresses and ids becomes `#`. Words stay
/// (`main.rs:14:9` keeps its place: the same panic at another line is
/// another failure).
pub fn normalize(line: &str) -> String {
    normalize_with(line, |token| {
        token.chars().any(|c| c.is_ascii_digit())
            && token.chars().all(|c| {
                c.is_ascii_hexdigit()
                    || matches!(c, '.' | ':' | '-' | 'T' | 'Z' | 'x' | 'X' | '+' | '_')
            })
    })
}

/// Lighter than [`normalize`], for test output: only what differs between
/// two runs of the same test failure (durations like `0.12s` or `15ms`,
/// times of day, long hex ids) becomes `#`; other numbers stay, since
/// "expected 5, got 6" and "got 7" are different failures.
pub fn normalize_volatile(line: &str) -> String {
    normalize_with(line, |token| {
        let digits = token.chars().filter(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        let number_then = |suffixes: &[&str]| {
            suffixes.iter().any(|s| {
                token.strip_suffix(s).is_some_and(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
            })
        };
        let time_of_day = token.matches(':').count() >= 2
            && token
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ':' | '.' | '-' | 'T' | 'Z' | '+'));
        let hex_id = token.len() >= 7 && token.chars().all(|c| c.is_ascii_hexdigit());
        number_then(&["ms", "s", "us", "µs", "ns", "m", "sec", "secs"]) || time_of_day || hex_id
    })
}

fn normalize_with(line: &str, variable: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.is_empty() {
            return;
        }
        if variable(token) {
            out.push('#');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '+') {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out.trim().to_string()
}

/// FNV-1a, 64 bits: a stable hash (std's hasher may change between Rust
/// versions, and keys are stored).
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The 16-hex-digit FNV-1a hash of `parts`, each followed by a NUL.
pub fn hash(parts: &[&str]) -> String {
    let mut h = Fnv::new();
    for p in parts {
        h.write(p.as_bytes());
        h.write(b"\0");
    }
    format!("{:016x}", h.0)
}

/// What a line of a unified diff is, for colouring it (terminal, dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffLine {
    /// `--- a/x` / `+++ b/x`
    File,
    Added,
    Removed,
    /// `@@ -1,2 +1,3 @@`
    Hunk,
    Context,
}

pub fn diff_line(line: &str) -> DiffLine {
    if line.starts_with("+++") || line.starts_with("---") {
        DiffLine::File
    } else if line.starts_with('+') {
        DiffLine::Added
    } else if line.starts_with('-') {
        DiffLine::Removed
    } else if line.starts_with("@@") {
        DiffLine::Hunk
    } else {
        DiffLine::Context
    }
}

/// At most `max` characters, with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// `s` safe to print on a terminal: control characters other than
/// newline and tab (escape sequences a journal line may carry, C1 controls
/// such as U+009B CSI) and the bidirectional overrides that reorder what a
/// line shows are written as `\xNN` / `\u{NNNN}`. For multi-line text
/// (a prompt); a field meant to be one line uses [`printable_line`].
/// Tab stays: it only moves the cursor forward, and code is indented with it.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    escape_unless(s, |c| c == '\n' || c == '\t')
}

/// [`printable`] for text shown as one line (a journal line, a unit name, a
/// cause): a line break is made visible too, so that outside text cannot
/// start a line of its own that looks like PiMainteno's.
pub fn printable_line(s: &str) -> std::borrow::Cow<'_, str> {
    escape_unless(s, |c| c == '\t')
}

fn escape_unless(s: &str, keep: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
            && !keep(c)
    };
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_shows_escape_sequences_as_text() {
        assert_eq!(printable("a\tb\nc"), "a\tb\nc");
        assert_eq!(printable("\u{1b}[2Jgone\r"), "\\x1b[2Jgone\\x0d");
        assert_eq!(printable("\u{9b}x"), "\\x9bx");
        assert_eq!(printable("a\u{202e}b\x7f"), "a\\u{202e}b\\x7f");
        assert_eq!(printable_line("a\tb\nc\r"), "a\tb\\x0ac\\x0d");
    }

    #[test]
    fn test_output_keeps_its_values_and_loses_its_timings() {
        assert_eq!(
            normalize_volatile("FAIL: add 2 3 gave 6, expected 5 (0.02s) at 12:01:02 [9f86d08]"),
            "FAIL: add 2 3 gave 6, expected 5 (#) at # [#]"
        );
        assert_ne!(normalize_volatile("gave 6"), normalize_volatile("gave 7"));
    }
}
