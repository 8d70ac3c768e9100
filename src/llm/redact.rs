//! Secrets out of every text before it reaches a model.
//!
//! Journal excerpts, tracebacks, diffs and config files go to an LLM that
//! may be a third party's. A password seen there is a password leaked, and
//! it cannot be taken back; a line made less readable costs only a little
//! of the model's understanding. So the rules lean towards catching too
//! much where a value is named as secret (`DB_PASSWORD=…`), and stay exact
//! where text is merely random-looking: hashes, commit ids, UUIDs and store
//! paths are what a repair needs to see, and no rule here fires on
//! randomness alone. Tokens are recognised by their published prefixes,
//! values by the name they are assigned to, headers by their name.
//!
//! Code is text too (diffs go to the model to be patched): where a type,
//! a variable or a template's field stands in a value's place
//! (`password: &str`, `token=cfg.token`), it stays, since a placeholder
//! in code finds its way into the patch.
//!
//! Only the value is replaced, never its label, and the same value gets the
//! same placeholder throughout one text, so the model still sees that two
//! lines use one key and which setting holds it. Placeholders are never
//! redacted again, so redacting twice changes nothing.
//!
//! All rules are built once ([`Redactor::new`]) as byte regexes in ASCII
//! mode: no Unicode tables in the binary, and spans are snapped to UTF-8
//! boundaries before the text is cut.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::anyhow;
use regex::bytes::{Captures, Regex, RegexBuilder};

/// Prefix of every placeholder: `[secret:<kind>#<n>]`.
pub const PLACEHOLDER_PREFIX: &str = "[secret:";

/// Literal secrets shorter than this are ignored (they would match
/// everywhere).
const MIN_LITERAL_CHARS: usize = 4;
/// A value found by a rule is also replaced where it appears alone
/// elsewhere in the text, when at least this long.
const MIN_PROPAGATED_BYTES: usize = 6;
/// Longer values are not looked for again.
const MAX_PROPAGATED_BYTES: usize = 512;
/// Nor more values than this (the first ones in the text).
const MAX_PROPAGATED_VALUES: usize = 16;

/// Well-known token formats: (kind, pattern). A group `s` in a pattern
/// marks the secret part (the rest is kept, e.g. a webhook's host).
/// Earlier entries win at the same position (`sk-ant-` before `sk-`).
const TOKENS: &[(&str, &str)] = &[
    (
        "aws-key",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
    ),
    (
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    (
        "gitlab-token",
        r"\b(?:gl(?:pat|dt|rt|ptt|ft|imt|oas|cbt|soat|ffct|agent|cd)-[A-Za-z0-9_.-]{20,}|GR1348941[A-Za-z0-9_-]{20,})",
    ),
    (
        "slack-webhook",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9+/_-]{20,})",
    ),
    ("slack-token", r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9-]{10,}"),
    (
        "discord-webhook",
        r"discord(?:app)?\.com/api/webhooks/[0-9]+/(?P<s>[A-Za-z0-9_-]{30,})",
    ),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    (
        "openai-key",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    ),
    ("google-api-key", r"\bAIza[A-Za-z0-9_-]{35}"),
    (
        "stripe-key",
        r"\b(?:(?:sk|rk|pk)_(?:live|test|prod)|whsec)_[A-Za-z0-9]{10,}",
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.ey[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ),
    ("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("pypi-token", r"\bpypi-AgE[A-Za-z0-9_-]{40,}"),
    (
        "sendgrid-key",
        r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
    ),
    ("twilio-key", r"\bSK[0-9a-fA-F]{32}\b"),
    ("huggingface-token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("digitalocean-token", r"\bdo[por]_v1_[a-f0-9]{64}\b"),
    ("tailscale-key", r"\btskey-[a-z]+-[A-Za-z0-9-]{10,}"),
    ("age-key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{50,}"),
    (
        "telegram-token",
        r"\b(?:bot)?(?P<s>[0-9]{5,16}:AA[A-Za-z0-9_-]{33})",
    ),
    (
        "password-hash",
        r"\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|md5|sha1|argon2(?:id|i|d))\$[A-Za-z0-9./+=,-]+\$[A-Za-z0-9./+=,$-]{16,}",
    ),
];

/// `scheme://user:password@host`: the password only.
const URL_PASSWORD: &str = r#"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/?#@"'<>]*:(?P<pw>[^\s/?#"'<>]+)@"#;

/// Authorization and cookie headers in any quoting, and bare `Bearer`/
/// `Basic` credentials. (`\\n` before a word: a line start in an escaped
/// string.)
const HEADERS: &str = r#"(?i)(?:\b|\\[nrt])(?:proxy-)?authorization\\?["']?[ \t]*[:=][ \t]*(?P<aq>\\?["']?)(?:(?P<as>[a-z][a-z0-9_-]*)[ \t]+)?(?P<av>[^\s"'\\]+)|(?:\b|\\[nrt])(?P<ck>set-cookie|cookie)\\?["']?[ \t]*:[ \t]*(?P<cq>\\?["']?)(?P<cv>[^\s"'\\;]+)|(?:\b|\\[nrt])bearer[ \t]+(?P<bt>[A-Za-z0-9._~+/-]+=*)|(?:\b|\\[nrt])basic[ \t]+(?P<bb>[A-Za-z0-9+/]+=*)"#;

/// Values assigned to a name that contains a secret word (the name is
/// judged in code, [`classify_name`]): `k=v`, `k: v`, `"k": "v"`, `k => v`,
/// `--flag v`, `.netrc`'s `login u password p`, curl's `-u user:pass`.
const ASSIGNMENT: &str = r#"(?i)(?:(?P<n>[a-z0-9_.-]*(?:pass|pwd|secret|token|key|auth|cred|psk|cookie)[a-z0-9_.-]*)(?:\\?["'])?[ \t]*(?::=|=>|=|:)[ \t]*|(?:(?m:^)|[^a-z0-9_.-])(?P<f>--?[a-z0-9_.-]*(?:pass|pwd|secret|token|key|auth|cred|psk)[a-z0-9_.-]*)[ \t]+|\blogin[ \t]+[^\s]+[ \t]+(?P<nr>password)[ \t]+|(?:(?m:^)|[ \t])(?P<cu>-u|--user)[ \t]+["']?[^\s:"']+:)(?:\\"(?P<eq>[^"\\\n]*)\\"|"(?P<dq>(?:[^"\\\n]|\\.)*)"|'(?P<sq>[^'\n]*)'|(?P<bv>[^\s"'`,;|)}\]]+))"#;

/// Which rule names a span that others found too (same start and end):
/// the lowest. Spans that merely overlap are merged.
const PRIO_PRIVATE_KEY: u8 = 0;
const PRIO_CONFIGURED: u8 = 1;
const PRIO_CUSTOM: u8 = 2;
const PRIO_TOKEN: u8 = 3;
const PRIO_URL: u8 = 4;
const PRIO_HEADER: u8 = 5;
const PRIO_ASSIGNMENT: u8 = 6;

/// Redacts secrets from texts. Built once per process, reused for many
/// texts from any thread.
pub struct Redactor {
    /// Every built-in rule but key blocks, as one regex: one pass over the
    /// text finds them all (the groups are read at matches only).
    builtin: Regex,
    /// For each entry of [`TOKENS`]: its kind, its whole group and its `s`
    /// group.
    token_groups: Vec<(&'static str, usize, Option<usize>)>,
    user: Vec<UserRule>,
    /// The literal secrets, longest first.
    literals: Vec<String>,
}

struct UserRule {
    re: Regex,
    /// The group to replace (`secret`, else the first); None: the match.
    group: Option<usize>,
}

impl std::fmt::Debug for Redactor {
    // Never prints the literals: they are the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("user_patterns", &self.user.len())
            .field("literals", &self.literals.len())
            .finish_non_exhaustive()
    }
}

/// A redacted text and what was replaced.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// kind -> number of distinct secret values of that kind replaced (e.g. "aws-key" -> 2)
    pub counts: BTreeMap<String, u32>,
    /// (placeholder, the value it stands for): for [`Redacted::restore`]
    /// only; never printed.
    values: Vec<(String, String)>,
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redacted")
            .field("text", &self.text)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Redacted {
    /// `answer` with each placeholder of this redaction replaced by the
    /// value it stands for: a patch's diff must apply to the real files.
    /// A placeholder the model made up stays as it is.
    pub fn restore(&self, answer: &str) -> String {
        if self.values.is_empty() || !answer.contains(PLACEHOLDER_PREFIX) {
            return answer.to_string();
        }
        let mut out = answer.to_string();
        for (placeholder, value) in &self.values {
            out = out.replace(placeholder.as_str(), value);
        }
        out
    }

    /// Distinct secret values replaced, all kinds together.
    pub fn total(&self) -> u32 {
        self.counts.values().sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Cand {
    start: usize,
    end: usize,
    kind: &'static str,
    prio: u8,
}

fn builtin(pattern: &str) -> anyhow::Result<Regex> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .map_err(|e| anyhow!("built-in redaction rule: {e}"))
}

fn user_regex(pattern: &str) -> Result<Regex, String> {
    let re = RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .map_err(|e| one_line_error(&e))?;
    // An empty match anywhere would put placeholders between characters.
    for probe in ["", "a", " ", "a b", "x=1\n", "\u{e9}", "[secret:x#1]"] {
        if re.find_iter(probe.as_bytes()).any(|m| m.is_empty()) {
            return Err("matches the empty string".to_string());
        }
    }
    Ok(re)
}

fn one_line_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let why = s
                .rsplit_once("error: ")
                .map(|(_, w)| w.trim())
                .unwrap_or(s.trim());
            let why = why.lines().next().unwrap_or(why);
            format!("invalid regex: {why}")
        }
        other => other.to_string().replace('\n', " "),
    }
}

impl Redactor {
    /// Built-in rules + the user's own regexes (`[llm] redact = [...]` in the config,
    /// kind "custom") + literal values that are always secret (the configured LLM
    /// API key etc.; kind "configured"; empty strings and values shorter than 4 chars ignored).
    /// Err names the bad user pattern (its index and text) and why.
    ///
    /// User patterns are matched in ASCII mode (`\w`, `\d`, `(?i)` are
    /// ASCII; `.` is any byte but newline); a group named `secret`, else
    /// the first group, is what gets replaced (the whole match when the
    /// pattern has no group or that group did not take part).
    pub fn new(user_patterns: &[String], literals: &[String]) -> anyhow::Result<Redactor> {
        let mut parts: Vec<String> = TOKENS
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                // After `\n` in an escaped string a token starts a line.
                let p = p
                    .strip_prefix(r"\b")
                    .map_or(p.to_string(), |rest| format!(r"(?:\b|\\[nrt]){rest}"));
                format!("(?P<t{i}>{})", p.replace("(?P<s>", &format!("(?P<s{i}>")))
            })
            .collect();
        // Same start: a token before a header before an assignment.
        parts.push(format!("(?P<url>{URL_PASSWORD})"));
        parts.push(format!("(?P<hdr>{HEADERS})"));
        parts.push(format!("(?P<asg>{ASSIGNMENT})"));
        let builtin = builtin(&parts.join("|"))?;
        let index = |name: &str| builtin.capture_names().position(|n| n == Some(name));
        let token_groups = TOKENS
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| {
                let whole = index(&format!("t{i}")).expect("token group");
                (*kind, whole, index(&format!("s{i}")))
            })
            .collect();

        let mut user = Vec::with_capacity(user_patterns.len());
        for (i, p) in user_patterns.iter().enumerate() {
            let re = user_regex(p).map_err(|why| anyhow!("redact[{i}] = {p:?}: {why}"))?;
            let group = re
                .capture_names()
                .position(|n| n == Some("secret"))
                .or((re.captures_len() > 1).then_some(1));
            user.push(UserRule { re, group });
        }

        let mut literals: Vec<String> = literals
            .iter()
            .filter(|l| l.trim().chars().count() >= MIN_LITERAL_CHARS)
            .cloned()
            .collect();
        literals.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        literals.dedup();

        Ok(Redactor {
            builtin,
            token_groups,
            user,
            literals,
        })
    }

    /// Validate one user pattern (for config load: the caller adds file/line/key).
    /// Err is a one-line human message (e.g. the regex error, or "matches the empty string").
    pub fn check_pattern(pattern: &str) -> Result<(), String> {
        user_regex(pattern).map(|_| ())
    }

    /// The text with every secret found replaced by `[secret:<kind>#<n>]`.
    ///
    /// Kinds: a token's (`aws-key`, `github-token`, … see `TOKENS`),
    /// `private-key`, `url-password`, `authorization`, `bearer`, `basic`,
    /// `cookie`; by a value's name `password`, `secret`, `token`,
    /// `api-key`, `aws-secret`, `private-key`, `cookie`; `custom` and
    /// `configured`. A value found twice under two kinds keeps the first.
    pub fn redact(&self, text: &str) -> Redacted {
        let segments = unplaceheld_segments(text);
        let mut cands = Vec::new();
        for &(s, e) in &segments {
            self.scan(text, s, e, &mut cands);
        }
        if cands.is_empty() {
            return Redacted {
                text: text.to_string(),
                ..Redacted::default()
            };
        }
        for c in &mut cands {
            c.start = floor_boundary(text, c.start);
            c.end = ceil_boundary(text, c.end);
        }
        cands.retain(|c| c.start < c.end);
        // Leftmost-longest, then by rule; an overlapping span widens the
        // one taken (never a part of a secret left in the clear).
        cands.sort_by_key(|c| (c.start, std::cmp::Reverse(c.end), c.prio));
        let mut taken: Vec<Cand> = Vec::with_capacity(cands.len());
        for c in cands {
            match taken.last_mut() {
                Some(last) if c.start < last.end => last.end = last.end.max(c.end),
                _ => taken.push(c),
            }
        }
        self.propagate(text, &segments, &mut taken);
        render(text, &taken)
    }

    fn scan(&self, text: &str, s: usize, e: usize, out: &mut Vec<Cand>) {
        let seg = &text[s..e];
        let hay = seg.as_bytes();
        let mut push = |start: usize, end: usize, kind: &'static str, prio: u8| {
            if start < end {
                out.push(Cand {
                    start: s + start,
                    end: s + end,
                    kind,
                    prio,
                });
            }
        };

        private_keys(seg, &mut |a, b| push(a, b, "private-key", PRIO_PRIVATE_KEY));

        for lit in &self.literals {
            for (i, _) in seg.match_indices(lit.as_str()) {
                push(i, i + lit.len(), "configured", PRIO_CONFIGURED);
            }
        }

        for rule in &self.user {
            match rule.group {
                None => {
                    for m in rule.re.find_iter(hay) {
                        push(m.start(), m.end(), "custom", PRIO_CUSTOM);
                    }
                }
                Some(g) => {
                    for c in rule.re.captures_iter(hay) {
                        let m = c.get(g).unwrap_or_else(|| c.get(0).expect("match"));
                        push(m.start(), m.end(), "custom", PRIO_CUSTOM);
                    }
                }
            }
        }

        self.builtin_scan(hay, 0, hay.len(), 0, &mut push);
    }

    /// The built-in rules' matches that start in `from..limit`. What a
    /// match passed over without redacting it is searched again
    /// (`token_url=https://h/?access_token=…` holds one more; so may a
    /// URL's user name).
    fn builtin_scan(
        &self,
        hay: &[u8],
        from: usize,
        limit: usize,
        depth: u8,
        found: &mut dyn FnMut(usize, usize, &'static str, u8),
    ) {
        let mut at = from;
        while at < limit {
            let Some(m) = self.builtin.find_at(hay, at) else {
                break;
            };
            if m.start() >= limit {
                break;
            }
            at = m.end().max(m.start() + 1);
            if let Some(v) = no_secret_name(hay, m.start(), m.end()) {
                let (a, b) = (m.start() + v, m.end());
                if depth < 4 && a < b && worth_another_look(&hay[a..b]) {
                    self.builtin_scan(hay, a, b, depth + 1, found);
                }
                continue;
            }
            let Some(c) = self.builtin.captures_at(&hay[..m.end()], m.start()) else {
                continue;
            };
            let whole = c.get(0).expect("match");
            let mut again: [Option<(usize, usize)>; 2] = [None, None];
            let judged = if let Some(tok) = self.token(&c) {
                Some(tok)
            } else if let Some(pw) = c.name("pw") {
                // The user name may be a token (`https://ghp_…:x@github.com`).
                let user =
                    find(&hay[whole.range()], b"://").map_or(pw.start(), |i| whole.start() + i + 3);
                again[0] = Some((user, pw.start()));
                (!non_value(&hay[pw.range()], false)).then_some((
                    pw.start(),
                    pw.end(),
                    "url-password",
                    PRIO_URL,
                ))
            } else if c.name("hdr").is_some() {
                header_value(hay, &c).map(|(a, b, k)| (a, b, k, PRIO_HEADER))
            } else {
                assignment_value(hay, &c).map(|(a, b, k)| (a, b, k, PRIO_ASSIGNMENT))
            };
            let rest = match judged {
                Some((a, b, kind, prio)) => {
                    // A value that is all one token is named by it.
                    let kind = if prio > PRIO_TOKEN {
                        self.token_kind(&hay[a..b]).unwrap_or(kind)
                    } else {
                        kind
                    };
                    found(a, b, kind, prio);
                    b
                }
                None => value_start(&c).unwrap_or(whole.end()),
            };
            if rest < whole.end() {
                again[1] = Some((rest, whole.end()));
            }
            for (a, b) in again.into_iter().flatten() {
                if depth < 4 && worth_another_look(&hay[a..b]) {
                    self.builtin_scan(hay, a, b, depth + 1, found);
                }
            }
        }
    }

    /// The token a match is, as (start, end, kind, priority).
    fn token(&self, c: &Captures) -> Option<(usize, usize, &'static str, u8)> {
        let &(kind, whole, part) = self.token_groups.iter().find(|g| c.get(g.1).is_some())?;
        let m = c.get(whole)?;
        // `sk-` starts many words; a key has digits.
        if kind == "openai-key" && !m.as_bytes().iter().any(u8::is_ascii_digit) {
            return None;
        }
        if let Some(p) = part.and_then(|p| c.get(p)) {
            return Some((p.start(), p.end(), kind, PRIO_TOKEN));
        }
        // Not the `\n` before it.
        let escaped = m.as_bytes().first() == Some(&b'\\');
        Some((
            m.start() + 2 * usize::from(escaped),
            m.end(),
            kind,
            PRIO_TOKEN,
        ))
    }

    /// The kind of the token that `value` is, entirely.
    fn token_kind(&self, value: &[u8]) -> Option<&'static str> {
        let m = self.builtin.find(value)?;
        if m.start() > 2 || m.end() != value.len() {
            return None;
        }
        let c = self.builtin.captures(value)?;
        let (a, b, kind, _) = self.token(&c)?;
        (a == 0 && b == value.len()).then_some(kind)
    }

    /// Replaces other occurrences of values already found, where they
    /// stand alone (not inside a longer word).
    fn propagate(&self, text: &str, segments: &[(usize, usize)], taken: &mut Vec<Cand>) {
        // Values found by their context only: a token's own rule finds
        // it anywhere already. One search of the text per value: bounded.
        let mut kinds: HashMap<&str, &'static str> = HashMap::new();
        for c in taken.iter().filter(|c| c.prio >= PRIO_URL) {
            let v = &text[c.start..c.end];
            if propagatable(v.as_bytes()) {
                kinds.entry(v).or_insert(c.kind);
                if kinds.len() == MAX_PROPAGATED_VALUES {
                    break;
                }
            }
        }
        // Longest first, so that a value inside another is not cut out of it.
        let mut values: Vec<(&str, &'static str)> = kinds.into_iter().collect();
        values.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        let bytes = text.as_bytes();
        for (value, kind) in values {
            for &(s, e) in segments {
                for (i, _) in text[s..e].match_indices(value) {
                    let (a, b) = (s + i, s + i + value.len());
                    let glued_before = a > 0 && is_word(bytes[a - 1]) && is_word(bytes[a]);
                    let glued_after = b < bytes.len() && is_word(bytes[b]) && is_word(bytes[b - 1]);
                    if !glued_before && !glued_after {
                        let prio = PRIO_ASSIGNMENT;
                        insert_if_free(
                            taken,
                            Cand {
                                start: a,
                                end: b,
                                kind,
                                prio,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// For an assignment to a name that holds no secret (`prompt_tokens=1834`,
/// `key: value`), where its value starts, read without the groups (they
/// cost microseconds a match, and these are the commonest matches).
fn no_secret_name(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    let m = &hay[start..end];
    let n = m
        .iter()
        .take_while(|&&b| is_word(b) || b == b'.' || b == b'-')
        .count();
    let name = &m[..n];
    // Not a Telegram token (`123456:AA…`) either.
    if n == 0 || name[n - 1].is_ascii_digit() {
        return None;
    }
    let mut i = n + usize::from(m.get(n) == Some(&b'\\'));
    i += usize::from(matches!(m.get(i), Some(b'"' | b'\'')));
    while matches!(m.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match (m.get(i), m.get(i + 1)) {
        (Some(b'='), Some(b'>')) | (Some(b':'), Some(b'=')) => i += 2,
        // A URL (`https://`).
        (Some(b':'), Some(b'/')) => return None,
        (Some(b'=' | b':'), _) => i += 1,
        _ => return None,
    }
    while matches!(m.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(b"cookie") || lower.ends_with(b"authorization") {
        return None;
    }
    let value = &m[i..];
    // `\nDB_PASSWORD=…` in an escaped string: the `n` is no part of it.
    let escaped = start > 0 && hay[start - 1] == b'\\';
    match classify_name(&name[usize::from(escaped)..]) {
        None => Some(i),
        // A short number under a name that only suggests a secret.
        Some((_, Strength::Weak, _))
            if (1..=7).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) =>
        {
            Some(m.len())
        }
        _ => None,
    }
}

/// A value worth looking for elsewhere: random-looking, not a word, a
/// number or a version that would recur by chance.
fn propagatable(v: &[u8]) -> bool {
    (MIN_PROPAGATED_BYTES..=MAX_PROPAGATED_BYTES).contains(&v.len())
        && v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_alphabetic)
        && !v.iter().any(u8::is_ascii_whitespace)
        && !is_version(v)
        && !is_hex_literal(v)
}

/// Whether a stretch a match passed over may hold another secret: a
/// token's length, or a separator.
fn worth_another_look(b: &[u8]) -> bool {
    b.len() >= 16 || b.iter().any(|c| b"=:".contains(c))
}

/// Keeps `taken` sorted and free of overlaps.
fn insert_if_free(taken: &mut Vec<Cand>, c: Cand) {
    let i = taken.partition_point(|t| t.start < c.end);
    if i > 0 && taken[i - 1].end > c.start {
        return;
    }
    taken.insert(i, c);
}

fn render(text: &str, taken: &[Cand]) -> Redacted {
    let mut out = String::with_capacity(text.len());
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut placeholders: HashMap<&str, String> = HashMap::new();
    let mut last = 0;
    for c in taken {
        out.push_str(&text[last..c.start]);
        let value = &text[c.start..c.end];
        let ph = placeholders.entry(value).or_insert_with(|| {
            let n = counts.entry(c.kind.to_string()).or_insert(0);
            *n += 1;
            format!("{PLACEHOLDER_PREFIX}{}#{n}]", c.kind)
        });
        out.push_str(ph);
        last = c.end;
    }
    out.push_str(&text[last..]);
    let values = placeholders
        .into_iter()
        .map(|(value, ph)| (ph, value.to_string()))
        .collect();
    Redacted {
        text: out,
        counts,
        values,
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The parts of `text` outside placeholders `[secret:<kind>#<n>]`.
fn unplaceheld_segments(text: &str) -> Vec<(usize, usize)> {
    let mut segs = Vec::new();
    let mut from = 0;
    let mut search = 0;
    while let Some(i) = text[search..].find(PLACEHOLDER_PREFIX) {
        let start = search + i;
        match placeholder_len(&text.as_bytes()[start..]) {
            Some(len) => {
                if start > from {
                    segs.push((from, start));
                }
                from = start + len;
                search = from;
            }
            None => search = start + 1,
        }
    }
    if from < text.len() {
        segs.push((from, text.len()));
    }
    segs
}

fn placeholder_len(b: &[u8]) -> Option<usize> {
    let rest = &b[PLACEHOLDER_PREFIX.len()..];
    let kind = rest
        .iter()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || **c == b'-')
        .count();
    if kind == 0 || rest.get(kind) != Some(&b'#') {
        return None;
    }
    let digits = rest[kind + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || rest.get(kind + 1 + digits) != Some(&b']') {
        return None;
    }
    Some(PLACEHOLDER_PREFIX.len() + kind + 1 + digits + 1)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let j = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        if hay[i + j..].starts_with(needle) {
            return Some(i + j);
        }
        i += j + 1;
    }
    None
}

fn line_end(hay: &[u8], from: usize) -> usize {
    hay[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(hay.len(), |i| from + i)
}

/// PEM / OpenSSH / PGP private key blocks, BEGIN through END; without an
/// END, to a blank line after the body or to the end of the text.
fn private_keys(text: &str, found: &mut dyn FnMut(usize, usize)) {
    const BEGIN: &str = "-----BEGIN ";
    let hay = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text.get(from..).and_then(|t| t.find(BEGIN)) {
        let begin = from + i;
        let label_start = begin + BEGIN.len();
        let eol = line_end(hay, label_start);
        let Some(close) = find(&hay[label_start..eol], b"-----") else {
            from = label_start;
            continue;
        };
        let label = hay[label_start..label_start + close].to_ascii_uppercase();
        if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
            from = label_start;
            continue;
        }
        let body = label_start + close + 5;
        let end = block_end(hay, body);
        found(begin, end);
        from = end.max(body);
    }
}

fn block_end(hay: &[u8], body: usize) -> usize {
    const END: &[u8] = b"-----END ";
    let end_marker = |line_start: usize, line_stop: usize| {
        find(&hay[line_start..line_stop], END).map(|e| {
            let after = line_start + e + END.len();
            find(&hay[after..line_stop], b"-----").map_or(line_stop, |d| after + d + 5)
        })
    };
    let eol = line_end(hay, body);
    // One line with escaped newlines (JSON, env files).
    if hay[body..eol].starts_with(b"\\n")
        || hay[body..eol].starts_with(b"\\r\\n")
        || hay[body..eol].starts_with(b"\\\\n")
    {
        if let Some(end) = end_marker(body, eol) {
            return end;
        }
        let mut k = body;
        while k < eol {
            if (hay[k] == b'"' || hay[k] == b'\'') && hay[k - 1] != b'\\' {
                return k;
            }
            k += 1;
        }
        return trim_end(hay, body, eol);
    }
    let mut pos = body;
    let mut last_nonblank = body;
    let mut seen_body = false;
    loop {
        let stop = line_end(hay, pos);
        if let Some(end) = end_marker(pos, stop) {
            return end;
        }
        let line = &hay[pos..stop];
        let content: Vec<u8> = line
            .iter()
            .copied()
            .skip_while(|b| b" \t\r+->#".contains(b))
            .filter(|b| !b" \t\r".contains(b))
            .collect();
        if content.is_empty() {
            if seen_body {
                return last_nonblank;
            }
        } else {
            seen_body |= !content.contains(&b':');
            last_nonblank = trim_end(hay, pos, stop);
        }
        if stop >= hay.len() {
            return last_nonblank;
        }
        pos = stop + 1;
    }
}

fn trim_end(hay: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && hay[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// Authorization schemes whose credentials run to the end of the value.
const AUTH_SCHEMES: &[&str] = &[
    "token",
    "digest",
    "negotiate",
    "ntlm",
    "apikey",
    "api-key",
    "key",
    "oauth",
    "dpop",
    "aws4-hmac-sha256",
    "hmac",
    "sso-key",
    "signature",
    "jwt",
    "session",
    "splunk",
];

fn header_value(hay: &[u8], c: &Captures) -> Option<(usize, usize, &'static str)> {
    if let Some(v) = c.name("av") {
        let quote = c
            .name("aq")
            .and_then(|q| q.as_bytes().last().copied())
            .or_else(|| outer_quote(hay, c.get(0)?.start()));
        let value = &hay[v.range()];
        let Some(scheme) = c.name("as") else {
            let bare_scheme = ["bearer", "basic", "digest", "token", "negotiate"]
                .iter()
                .any(|s| value.eq_ignore_ascii_case(s.as_bytes()));
            return (!bare_scheme && looks_secret(value) && !non_value(value, false)).then_some((
                v.start(),
                v.end(),
                "authorization",
            ));
        };
        let s = scheme.as_bytes().to_ascii_lowercase();
        if non_value(value, false) {
            return None;
        }
        return match s.as_slice() {
            b"bearer" => Some((v.start(), v.end(), "bearer")),
            b"basic" => Some((v.start(), v.end(), "basic")),
            s if AUTH_SCHEMES.iter().any(|a| a.as_bytes() == s) => Some((
                v.start(),
                value_extent(hay, v.start(), quote),
                "authorization",
            )),
            // A scheme of its own, or none ("authorization: failed
            // for …", where the first word would be the value).
            _ if looks_secret(value) => Some((
                v.start(),
                value_extent(hay, v.start(), quote),
                "authorization",
            )),
            _ => {
                let w = &hay[scheme.range()];
                (looks_secret(w) && !non_value(w, false)).then_some((
                    scheme.start(),
                    scheme.end(),
                    "authorization",
                ))
            }
        };
    }
    if let Some(v) = c.name("cv") {
        let name = c.name("ck").expect("ck group").as_bytes();
        let value = &hay[v.range()];
        if name.eq_ignore_ascii_case(b"set-cookie") {
            let eq = value.iter().position(|&b| b == b'=')?;
            let start = v.start() + eq + 1;
            return (!non_value(&hay[start..v.end()], false)).then_some((start, v.end(), "cookie"));
        }
        let quote = c
            .name("cq")
            .and_then(|q| q.as_bytes().last().copied())
            .or_else(|| outer_quote(hay, c.get(0)?.start()));
        // A cookie header is `name=value; …` (not `cookie: Option<T>`).
        let pairs = value.contains(&b'=') && !non_value(value, true);
        return pairs.then_some((v.start(), value_extent(hay, v.start(), quote), "cookie"));
    }
    // Without a header's name, a credential shows by its digits
    // ("Bearer token expired", "the Basic Multilingual Plane").
    let credential_like = |v: &[u8]| {
        looks_secret(v)
            && !non_value(v, false)
            && v.iter().any(|b| b.is_ascii_digit() || *b == b'=')
    };
    if let Some(v) = c.name("bt") {
        let value = &hay[v.range()];
        return credential_like(value).then_some((v.start(), v.end(), "bearer"));
    }
    let v = c.name("bb")?;
    credential_like(&hay[v.range()]).then_some((v.start(), v.end(), "basic"))
}

/// The quote just before a header name (`-H 'Authorization: …'`); after
/// an escaped line end, the string's.
fn outer_quote(hay: &[u8], name_start: usize) -> Option<u8> {
    if hay.get(name_start) == Some(&b'\\') {
        return Some(b'"');
    }
    let b = *hay.get(name_start.checked_sub(1)?)?;
    (b == b'"' || b == b'\'').then_some(b)
}

/// A header value that may hold spaces: to its closing quote, an escaped
/// line end (`\r\n` in a request dump), or the end of the line.
fn value_extent(hay: &[u8], start: usize, quote: Option<u8>) -> usize {
    let eol = line_end(hay, start);
    let mut end = start;
    while end < eol {
        let b = hay[end];
        if Some(b) == quote || b == b'\r' {
            break;
        }
        if b == b'\\' && matches!(hay.get(end + 1), Some(b'r' | b'n') | None) {
            break;
        }
        if b == b'\\' && quote.is_some() && hay.get(end + 1) == quote.as_ref() {
            break;
        }
        end += 1;
    }
    trim_end(hay, start, end)
}

/// Where the value of a header or assignment match starts.
fn value_start(c: &Captures) -> Option<usize> {
    ["av", "cv", "bt", "bb"]
        .iter()
        .find_map(|g| c.name(g))
        .or_else(|| value_group(c))
        .map(|m| m.start())
}

fn value_group<'h>(c: &Captures<'h>) -> Option<regex::bytes::Match<'h>> {
    ["eq", "dq", "sq", "bv"].iter().find_map(|g| c.name(g))
}

fn assignment_value(hay: &[u8], c: &Captures) -> Option<(usize, usize, &'static str)> {
    let v = value_group(c)?;
    let bare = c.name("bv").is_some();
    // `&` ends a bare value only before another `name=` (a query string);
    // an escape (`\n`, `\"`) ends it in an escaped string.
    let end = if bare {
        let v_bytes = &hay[v.range()];
        let escape = v_bytes
            .windows(2)
            .position(|w| w[0] == b'\\' && b"nrt\"".contains(&w[1]));
        [query_end(v_bytes), escape]
            .into_iter()
            .flatten()
            .min()
            .map_or(v.end(), |i| v.start() + i)
    } else {
        v.end()
    };
    let value = &hay[v.start()..end];
    let (kind, strength, aws) = if let Some(n) = c.name("n").or_else(|| c.name("f")) {
        // `\nDB_PASSWORD=…` in an escaped string: the `n` is no part of it.
        let escaped = n.start() > 0 && hay[n.start() - 1] == b'\\';
        classify_name(&n.as_bytes()[usize::from(escaped)..])?
    } else {
        ("password", Strength::Strong, false)
    };
    if non_value(value, bare) {
        return None;
    }
    if bare && value.starts_with(b"-") && c.name("f").is_some() {
        return None;
    }
    if bare && code_or_prose(hay, c, end) {
        return None;
    }
    if strength == Strength::Weak && !looks_secret(value) {
        return None;
    }
    let kind = if aws && value.len() == 40 {
        "aws-secret"
    } else {
        kind
    };
    Some((v.start(), end, kind))
}

/// A bare value that reads as a type or a variable in code (`token:
/// Token,`, `key: ActiveKey)`, `secret: s,`), or as prose after a colon (`credential: name the
/// provider's …`).
fn code_or_prose(hay: &[u8], c: &Captures, end: usize) -> bool {
    let Some(v) = c.name("bv") else {
        return false;
    };
    let value = &hay[v.start()..end];
    let next = hay.get(end).copied();
    // A template's field cut at its brace: `password:{}`, `key={0}`.
    if value[0] == b'{'
        && next == Some(b'}')
        && value[1..]
            .iter()
            .all(|&b| is_word(b) || b".:?#<>^+-".contains(&b))
    {
        return true;
    }
    // What follows, past one space: `Type {`, `Trait + Other`, `: u32 = 2`.
    let after_space = (next == Some(b' '))
        .then(|| hay.get(end + 1).copied())
        .flatten();
    let code_follows = next.is_some_and(|b| b",;)>{=<".contains(&b))
        || after_space.is_some_and(|b| b"{+=".contains(&b));
    if (is_type_name(value) || is_primitive_type(value)) && code_follows {
        return true;
    }
    // A type annotation: `const SECRETMEM_MAGIC: u32 = …`, `x: _bindgen_ty_7 =`.
    if after_space == Some(b'=') && hay.get(end + 2) != Some(&b'=') {
        let colon = c
            .name("n")
            .is_some_and(|n| hay[n.end()..v.start()].contains(&b':'));
        if colon {
            return true;
        }
    }
    // A variable: `master_secret: ms,`, `f(password=pw)`, `let c = entry?;`.
    let ident = value.strip_suffix(b"?").unwrap_or(value);
    let variable = ident
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
        && ident.iter().all(|&b| b.is_ascii_lowercase() || b == b'_');
    if variable && next.is_some_and(|b| b",;)}".contains(&b)) {
        return true;
    }
    let colon = c
        .name("n")
        .is_some_and(|n| !hay[n.end()..v.start()].contains(&b'='));
    colon
        && value.iter().all(u8::is_ascii_lowercase)
        && next == Some(b' ')
        && hay
            .get(end + 1)
            .is_some_and(|b| b.is_ascii_graphic() && *b != b'#')
}

/// Where `&name=` starts in a bare value, if it does.
fn query_end(v: &[u8]) -> Option<usize> {
    v.iter().enumerate().position(|(i, &b)| {
        if b != b'&' {
            return false;
        }
        let name = v[i + 1..]
            .iter()
            .take_while(|&&c| is_word(c) || c == b'.' || c == b'-')
            .count();
        name > 0 && v.get(i + 1 + name) == Some(&b'=')
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Any real value is a secret.
    Strong,
    /// The value must also look like a credential ([`looks_secret`]).
    Weak,
}

/// Name components that say the value is about a secret, not one.
const META: &[&str] = &[
    "file",
    "files",
    "path",
    "paths",
    "dir",
    "directory",
    "name",
    "names",
    "id",
    "ids",
    "ref",
    "arn",
    "url",
    "uri",
    "endpoint",
    "host",
    "count",
    "counts",
    "budget",
    "limit",
    "limits",
    "usage",
    "used",
    "type",
    "types",
    "len",
    "length",
    "size",
    "expiry",
    "expires",
    "expiration",
    "expire",
    "ttl",
    "lifetime",
    "timeout",
    "prompt",
    "method",
    "methods",
    "mode",
    "env",
    "var",
    "variable",
    "cmd",
    "command",
    "helper",
    "provider",
    "format",
    "policy",
    "source",
    "stdin",
    "header",
    "hint",
    "label",
    "field",
    "version",
    "algorithm",
    "algo",
    "location",
    "required",
    "enabled",
    "disabled",
    "min",
    "max",
    "scheme",
    "kind",
    "class",
    "mgmt",
    "management",
    "fingerprint",
    "changed",
    "reset",
    "rotation",
    "strength",
    "plugin",
    "plugins",
    "module",
    "modules",
    "backend",
    "handler",
    "server",
    "service",
    "user",
    "username",
    "login",
    "realm",
    "domain",
    "level",
    "port",
    "address",
    "addr",
    "mask",
];

/// Components before `key` that make it not a secret (`public_key`).
const KEY_DENY: &[&str] = &[
    "public",
    "pub",
    "primary",
    "foreign",
    "sort",
    "partition",
    "cache",
    "map",
    "hash",
    "host",
    "lookup",
    "unique",
    "index",
    "row",
    "group",
    "routing",
    "idempotency",
    "object",
    "registry",
    "ssh",
    "gpg",
    "pgp",
    "dict",
    "hot",
    "short",
    "shortcut",
    "composite",
    "search",
    "type",
    "value",
    "sign",
    "signing",
    "trusted",
    "known",
];

/// Lower-case components of an identifier: `DB_PASSWORD`, `mySecretKey`,
/// `X-Api-Key`, `APIKey` → db/password, my/secret/key, x/api/key, api/key.
/// Trailing digits are dropped (`key1` → `key`).
fn components(name: &[u8]) -> Vec<String> {
    let mut comps = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, comps: &mut Vec<String>| {
        let t = cur.trim_end_matches(|c: char| c.is_ascii_digit());
        let t = if t.is_empty() { cur.as_str() } else { t };
        if !t.is_empty() {
            comps.push(t.to_string());
        }
        cur.clear();
    };
    for (i, &b) in name.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            flush(&mut cur, &mut comps);
            continue;
        }
        if b.is_ascii_uppercase() && !cur.is_empty() {
            let prev = name[i - 1];
            let next_lower = name.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase() || (prev.is_ascii_uppercase() && next_lower) {
                flush(&mut cur, &mut comps);
            }
        }
        cur.push(b.to_ascii_lowercase() as char);
    }
    flush(&mut cur, &mut comps);
    comps
}

/// (kind, strength, aws-ish) of a name, None when it does not name a
/// secret.
fn classify_name(name: &[u8]) -> Option<(&'static str, Strength, bool)> {
    // A test's status (`--- PASS: TestFoo`, automake's `PASS: t1`).
    if name == b"PASS" {
        return None;
    }
    let comps = components(name);
    let last = comps.last()?;
    if comps.len() > 1 && META.contains(&last.as_str()) {
        return None;
    }
    // systemd's `LoadCredential=id:path` names a file, not a secret.
    if comps.len() > 1 && (comps[0] == "load" || comps[0] == "import") {
        return None;
    }
    if comps.len() == 1 && (last == "pwd" || last == "oldpwd") {
        return None;
    }
    // Headers named for their own rule, and ones that only say whether
    // (`Access-Control-Allow-Credentials: true`).
    if comps
        .iter()
        .any(|c| c.contains("authori") || c.contains("authentic") || c == "allow")
    {
        return None;
    }
    let n = comps.len();
    let has = |f: &dyn Fn(usize, &str) -> bool| comps.iter().enumerate().any(|(i, c)| f(i, c));
    let aws = comps.iter().any(|c| c == "aws" || c.starts_with("aws"))
        || name
            .to_ascii_lowercase()
            .windows(15)
            .any(|w| w == b"secretaccesskey");
    if has(&|i, c| {
        c.contains("password")
            || c.contains("passwd")
            || c.contains("passphrase")
            || c.contains("passwort")
            || c.contains("passcode")
            || c == "pwd"
            || c.ends_with("pwd")
            || (c == "psk" && i == n - 1)
            || (c == "pass" && i == n - 1 && n > 1)
    }) {
        return Some(("password", Strength::Strong, false));
    }
    if has(&|_, c| {
        (c.contains("secret") && !c.contains("secretar"))
            || c == "credential"
            || c == "credentials"
            || c == "creds"
    }) {
        return Some(("secret", Strength::Strong, aws));
    }
    if has(&|i, c| c == "privatekey" || (c == "key" && i > 0 && comps[i - 1] == "private")) {
        return Some(("private-key", Strength::Strong, false));
    }
    if n == 1 && last == "pass" {
        return Some(("password", Strength::Weak, false));
    }
    if has(&|_, c| c == "token" || (c.len() > 5 && c.ends_with("token")) || c == "auth") {
        return Some(("token", Strength::Weak, false));
    }
    if has(&|i, c| {
        (c.len() > 3 && c.ends_with("key") && KEY_COMPOUNDS.contains(&c))
            || (c == "key" && i > 0 && !KEY_DENY.contains(&comps[i - 1].as_str()))
    }) {
        return Some(("api-key", Strength::Weak, aws));
    }
    if has(&|_, c| c == "cookie") {
        return Some(("cookie", Strength::Weak, false));
    }
    None
}

/// One-word names ending in `key` that are secrets.
const KEY_COMPOUNDS: &[&str] = &[
    "apikey",
    "accesskey",
    "secretkey",
    "authkey",
    "masterkey",
    "signingkey",
    "encryptionkey",
    "clientkey",
    "appkey",
    "licensekey",
    "sessionkey",
    "webhookkey",
];

/// Words that are no value of a secret (`password: required`), or a
/// programming language's type (`token: String`).
const NON_VALUES: &[&str] = &[
    "null",
    "none",
    "nil",
    "undefined",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "empty",
    "unset",
    "set",
    "required",
    "optional",
    "redacted",
    "hidden",
    "masked",
    "filtered",
    "removed",
    "omitted",
    "secret",
    "secrets",
    "password",
    "passwd",
    "token",
    "n/a",
    "tbd",
    "todo",
    "placeholder",
    "invalid",
    "expired",
    "missing",
    "incorrect",
    "changed",
    "updated",
    "ok",
    "failed",
    "denied",
    "str",
    "string",
    "bytes",
    "int",
    "bool",
    "self",
    "secretstring",
    "option",
    "any",
    "object",
];

/// A value that is no secret: empty, a mask (`***`), a reference to one
/// (`$VAR`, `${VAR}`, `{{ x }}`, `%(x)s`), a marker (`<redacted>`), or,
/// unquoted, code (`config.password`, `getpass()`, `&str`).
fn non_value(v: &[u8], bare: bool) -> bool {
    let v = v.trim_ascii();
    if v.is_empty() {
        return true;
    }
    if v.iter().all(|b| b"*xX.#?-_ ".contains(b)) || v.starts_with("\u{2022}".as_bytes()) {
        return true;
    }
    if v[0] == b'$'
        && v.get(1)
            .is_some_and(|b| b.is_ascii_alphabetic() || b"{(_".contains(b))
    {
        return true;
    }
    if v.starts_with(b"{{") || v.starts_with(b"{%") || v.starts_with(b"%(") || v.starts_with(b"#{")
    {
        return true;
    }
    if v.len() > 2 && v[0] == b'%' && v[v.len() - 1] == b'%' {
        return true;
    }
    if v[0] == b'<' && v[v.len() - 1] == b'>' {
        return true;
    }
    if [b"|".as_slice(), b"|-", b"|+", b">", b">-", b">+"].contains(&v) {
        return true;
    }
    // YAML tags: `!vault |`, Home Assistant's `!secret name`.
    if v[0] == b'!' && v[1..].iter().all(|b| b.is_ascii_alphabetic()) {
        return true;
    }
    let lower = unwrap_brackets(v).to_ascii_lowercase();
    if NON_VALUES.iter().any(|w| w.as_bytes() == lower.as_slice()) {
        return true;
    }
    if starts_with_root_dir(v) {
        return true;
    }
    // A template's field: `{password}`, `{WEB_PASSWORD_CREDENTIAL}:{}`, `{:?}`.
    if v[0] == b'{' {
        let inner = v[1..]
            .iter()
            .take_while(|&&b| is_word(b) || b".:?#<>^+-".contains(&b))
            .count();
        if v.get(1 + inner) == Some(&b'}') {
            return true;
        }
    }
    // `NL80211_ATTR_SAE_PASSWORD = 277,`, `secret = b"…"`: no password is
    // that short a number, or one character.
    if v.len() == 1 || (v.len() <= 3 && v.iter().all(u8::is_ascii_digit)) {
        return true;
    }
    if bare {
        // Code: `&str`, `*mut T`, `getpass()`, `cfg["x"]`, `Foo::new`,
        // `:Variant`, `0x0017`.
        if v[0] == b'&' || v[0] == b':' || v.contains(&b'(') || v.contains(&b'[') {
            return true;
        }
        if v[0] == b'*' && v[1].is_ascii_alphabetic() {
            return true;
        }
        if v.windows(2).any(|w| w == b"::") || is_hex_literal(v) {
            return true;
        }
        if is_dotted_identifier(v) || is_generic_type(v) || is_secretish_identifier(&lower) {
            return true;
        }
    }
    false
}

/// `[REDACTED]`, `<hidden>` → the word inside.
fn unwrap_brackets(v: &[u8]) -> &[u8] {
    let a = v.iter().take_while(|b| b"[<(".contains(b)).count();
    let v = &v[a..];
    let z = v.iter().rev().take_while(|b| b"]>)".contains(b)).count();
    &v[..v.len() - z]
}

fn starts_with_root_dir(v: &[u8]) -> bool {
    const ROOTS: &[&str] = &[
        "/etc/", "/run/", "/home/", "/var/", "/usr/", "/root/", "/tmp/", "/opt/", "/srv/",
        "/proc/", "/sys/", "/dev/", "/mnt/", "/media/", "/boot/", "/nix/", "~/", "./", "../",
    ];
    ROOTS.iter().any(|r| v.starts_with(r.as_bytes()))
}

/// `config.password`, `self.token`, `node.dot2_token`: an object's field
/// (the object's name in lower case, unlike a dotted token's parts).
fn is_dotted_identifier(v: &[u8]) -> bool {
    let parts: Vec<&[u8]> = v.split(|&b| b == b'.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p[0].is_ascii_digit() && p.iter().all(|&b| is_word(b)))
        && parts[0]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `Option<String>`, `Vec<u8>`, `Key<'_>` (cut at the quote).
fn is_generic_type(v: &[u8]) -> bool {
    let Some(lt) = v.iter().position(|&b| b == b'<') else {
        return false;
    };
    lt > 0 && !v[0].is_ascii_digit() && v[..lt].iter().all(|&b| is_word(b) || b == b':')
}

fn is_hex_literal(v: &[u8]) -> bool {
    v.len() > 2 && v.len() <= 18 && v.starts_with(b"0x") && v[2..].iter().all(u8::is_ascii_hexdigit)
}

/// `1.2.3`, `v2.0.1-rc1`, `528.0.0-0`: a version, not a credential.
fn is_version(v: &[u8]) -> bool {
    let v = v.strip_prefix(b"v").unwrap_or(v);
    let core = v
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    core > 0
        && v[0].is_ascii_digit()
        && v[..core].contains(&b'.')
        && v[core..].first().is_none_or(|b| b"-+~:".contains(b))
}

/// `u32`, `__u32`, `i64`, `usize`, `__le16`.
fn is_primitive_type(v: &[u8]) -> bool {
    let v = &v[v.iter().take_while(|&&b| b == b'_').count()..];
    let digits = v.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let stem = &v[..v.len() - digits];
    matches!(v, b"usize" | b"isize" | b"bool" | b"char")
        || ((1..=3).contains(&digits) && matches!(stem, b"u" | b"i" | b"f" | b"s" | b"le" | b"be"))
}

/// `ClientExtensions`: a type's name (no digits, two humps or more).
fn is_type_name(v: &[u8]) -> bool {
    v.first().is_some_and(u8::is_ascii_uppercase)
        && v.iter().all(u8::is_ascii_alphabetic)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().filter(|b| b.is_ascii_uppercase()).count() >= 2
}

/// `user_password`, `api_token`: a variable holding the secret.
fn is_secretish_identifier(lower: &[u8]) -> bool {
    lower.contains(&b'_')
        && lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'_')
        && ["pass", "secret", "token", "key", "auth", "cred"]
            .iter()
            .any(|w| lower.windows(w.len()).any(|x| x == w.as_bytes()))
}

/// What a credential looks like, for names that only suggest one
/// (`token`, `auth`, `api_key`): 8 characters or more, no spaces, with a
/// digit or mixed case (or long).
fn looks_secret(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    if v.len() < 8 || v.iter().any(|b| b.is_ascii_whitespace()) || is_version(v) {
        return false;
    }
    let digit = v.iter().any(|b| b.is_ascii_digit());
    let upper = v.iter().any(|b| b.is_ascii_uppercase());
    let lower = v.iter().any(|b| b.is_ascii_lowercase());
    digit || (upper && lower && v.len() >= 12) || v.len() >= 24
}

/// Files that hold secrets by their name: `.env`, `.env.*` (e.g. .env.local), `*.env`, `*.pem`,
/// `id_rsa*`, `id_ed25519*`, `id_ecdsa*`, `id_dsa*`, `*.key`, `credentials*`, `secrets.*`, `.netrc`, `.pgpass`,
/// `*.p12`, `*.pfx`, `.npmrc`, `.pypirc`, `*.keystore`/`*.jks`. Judged on the file name (last component) only,
/// case-insensitive. `.env.example`/`.env.sample`/`.env.template` are NOT secret (they're templates).
///
/// Also: `.git-credentials`, `_netrc`, `.htpasswd`, `*.kdbx`, `*.ovpn`,
/// `*.nmconnection` and `wpa_supplicant*.conf` (Wi-Fi keys), `shadow`,
/// `gshadow`. Not: `id_*.pub` (public keys).
pub fn is_secret_file(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.to_string_lossy().to_ascii_lowercase();
    let name = name.as_str();
    const TEMPLATES: &[&str] = &["example", "sample", "template", "dist"];
    if name == ".env" {
        return true;
    }
    if let Some(rest) = name.strip_prefix(".env.") {
        return !rest.split('.').any(|p| TEMPLATES.contains(&p));
    }
    if let Some(stem) = name.strip_suffix(".env") {
        return !stem.is_empty();
    }
    const EXACT: &[&str] = &[
        ".netrc",
        "_netrc",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        ".git-credentials",
        ".htpasswd",
        "shadow",
        "gshadow",
        "shadow-",
        "gshadow-",
    ];
    if EXACT.contains(&name) {
        return true;
    }
    const EXTENSIONS: &[&str] = &[
        ".pem",
        ".key",
        ".p12",
        ".pfx",
        ".keystore",
        ".jks",
        ".kdbx",
        ".ovpn",
        ".nmconnection",
    ];
    if EXTENSIONS
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
    {
        return true;
    }
    for key in ["id_rsa", "id_ed25519", "id_ecdsa", "id_dsa"] {
        if name.starts_with(key) {
            return !name.ends_with(".pub");
        }
    }
    if name.starts_with("credentials") || name.starts_with("secrets.") {
        return true;
    }
    name.starts_with("wpa_supplicant") && name.ends_with(".conf")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fake secrets are put together at run time so that this file holds no
    // string a secret scanner would flag.
    fn rep(s: &str, n: usize) -> String {
        s.repeat(n)
    }

    fn r() -> Redactor {
        Redactor::new(&[], &[]).unwrap()
    }

    /// `secret` is gone from the redacted `text` and a `kind` placeholder
    /// is there.
    #[track_caller]
    fn hides(text: &str, secret: &str, kind: &str) {
        let out = r().redact(text);
        assert!(
            !out.text.contains(secret),
            "{secret:?} still in {:?} (from {text:?})",
            out.text
        );
        assert!(
            out.text.contains(&format!("[secret:{kind}#")),
            "no {kind} placeholder in {:?} (from {text:?})",
            out.text
        );
        assert!(
            out.counts.get(kind).is_some_and(|&n| n >= 1),
            "{:?}",
            out.counts
        );
    }

    #[track_caller]
    fn same(text: &str) {
        let out = r().redact(text);
        assert_eq!(out.text, text, "changed: {:?}", out.counts);
        assert_eq!(out.total(), 0);
    }

    fn gh() -> String {
        format!("ghp_{}", rep("a1B2", 9))
    }
    fn aws_id() -> String {
        format!("AKIA{}", rep("Q7ZX", 4))
    }
    fn aws_secret() -> String {
        format!("wJalr{}", rep("Xu7F/", 7))
    }
    fn jwt() -> String {
        format!(
            "eyJ{}.eyJ{}.{}",
            rep("hbGciOiJIUzI1", 2),
            rep("zdWIiOiIxMjM0", 3),
            rep("SflKxwRJSMeKKF2QT4", 2)
        )
    }
    fn pem(label: &str) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n{}\n{}\n-----END {label}-----",
            rep("MIIEowIBAAKCAQEA", 4),
            rep("q1w2e3r4t5y6u7i8", 4),
            rep("Zx9Yw8", 5)
        )
    }

    #[test]
    fn builds_and_is_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Redactor>();
        let r = r();
        assert_eq!(r.token_groups.len(), TOKENS.len());
        assert!(!format!("{r:?}").is_empty());
    }

    #[test]
    fn private_keys() {
        for label in [
            "RSA PRIVATE KEY",
            "PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            let key = pem(label);
            let text =
                format!("Dec 03 10:00:01 pi app[812]: loaded key:\n{key}\nnext line stays\n");
            let out = r().redact(&text);
            assert_eq!(
                out.text,
                "Dec 03 10:00:01 pi app[812]: loaded key:\n[secret:private-key#1]\nnext line stays\n"
            );
            assert_eq!(out.counts["private-key"], 1);
        }
        // A certificate is not a secret.
        same(
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n-----END CERTIFICATE-----\n",
        );
    }

    #[test]
    fn truncated_and_escaped_private_keys() {
        let body = rep("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", 3);
        // No END: up to the blank line.
        let text = format!("-----BEGIN PRIVATE KEY-----\n{body}\n{body}\n\nafter the blank line\n");
        let out = r().redact(&text);
        assert_eq!(out.text, "[secret:private-key#1]\n\nafter the blank line\n");
        // No END and no blank line: to the end.
        let out = r().redact(&format!(
            "key follows\n-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n{body}"
        ));
        assert_eq!(out.text, "key follows\n[secret:private-key#1]");
        // Escaped newlines in JSON (a service account file).
        let json = format!(
            "{{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n\", \"client_email\": \"a@b.iam\"}}"
        );
        let out = r().redact(&json);
        assert!(!out.text.contains(&body), "{}", out.text);
        assert!(
            out.text.contains("\"client_email\": \"a@b.iam\""),
            "{}",
            out.text
        );
        // Escaped and cut short: to the closing quote.
        let json = format!("{{\"key\": \"-----BEGIN RSA PRIVATE KEY-----\\n{body}\", \"n\": 1}}");
        let out = r().redact(&json);
        assert_eq!(out.text, "{\"key\": \"[secret:private-key#1]\", \"n\": 1}");
        // In a diff.
        let diff = format!(
            "+-----BEGIN EC PRIVATE KEY-----\n+{body}\n+-----END EC PRIVATE KEY-----\n context\n"
        );
        let out = r().redact(&diff);
        assert_eq!(out.text, "+[secret:private-key#1]\n context\n");
    }

    #[test]
    fn url_passwords() {
        let out = r().redact("postgres://app:hunter2@db/x");
        assert_eq!(out.text, "postgres://app:[secret:url-password#1]@db/x");
        hides(
            "DATABASE_URL=mysql://root:S3cr3t!x@127.0.0.1:3306/shop",
            "S3cr3t!x",
            "url-password",
        );
        hides("redis://:p4ssw0rd@cache:6379/0", "p4ssw0rd", "url-password");
        hides(
            "git clone https://bob:tok3nvalue@git.example.com/r.git",
            "tok3nvalue",
            "url-password",
        );
        hides(
            "http_proxy=http://proxyuser:pr0xyPass@proxy.lan:3128",
            "pr0xyPass",
            "url-password",
        );
        // Password holding an `@`.
        hides("amqp://guest:p@ss@rabbit:5672/", "p@ss", "url-password");
        // A token as the user name.
        let out = r().redact(&format!(
            "https://{}:x-oauth-basic@github.com/o/r.git",
            gh()
        ));
        assert_eq!(
            out.text,
            "https://[secret:github-token#1]:[secret:url-password#1]@github.com/o/r.git"
        );
        same("https://example.com/a?b=c");
        same("ssh://git@github.com:22/org/repo.git");
        same("http://[::1]:8080/path@x");
        same("https://user@example.com/path");
    }

    #[test]
    fn authorization_headers() {
        let tok = format!("abc{}", rep("9xY", 10));
        let out = r().redact(&format!("Authorization: Bearer {tok}"));
        assert_eq!(out.text, "Authorization: Bearer [secret:bearer#1]");
        hides(
            "Authorization: Basic dXNlcjpodW50ZXIy",
            "dXNlcjpodW50ZXIy",
            "basic",
        );
        hides(
            "Proxy-Authorization: Basic cHJveHk6c2VjcmV0MTIz",
            "cHJveHk6c2VjcmV0MTIz",
            "basic",
        );
        hides(
            &format!("curl -s -H \"Authorization: Bearer {tok}\" https://api.example.com/v1"),
            &tok,
            "bearer",
        );
        hides(
            &format!("curl -H 'Authorization: token {tok}' x"),
            &tok,
            "authorization",
        );
        hides(
            &format!(r#"{{"headers": {{"Authorization": "Bearer {tok}", "Accept": "*/*"}}}}"#),
            &tok,
            "bearer",
        );
        hides(
            &format!("{{'Authorization': 'Bearer {tok}'}}"),
            &tok,
            "bearer",
        );
        hides(&format!("authorization={tok}"), &tok, "authorization");
        let out = r().redact(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, Signature=fe5f80f77d5fa3beca038a248ff027",
        );
        assert_eq!(
            out.text,
            "Authorization: AWS4-HMAC-SHA256 [secret:authorization#1]"
        );
        hides(
            &format!("using Bearer {tok} for the request"),
            &tok,
            "bearer",
        );
        hides(
            &format!("nginx: proxy_set_header Authorization \"Bearer {tok}\";"),
            &tok,
            "bearer",
        );
        let out = r().redact(&format!(
            r#"{{"msg": "env:\nGITHUB_TOKEN={tok}\n{}\nauth=Zx9Yw8Vu7Ts6\n"}}"#,
            gh()
        ));
        assert_eq!(
            out.text,
            r#"{"msg": "env:\nGITHUB_TOKEN=[secret:token#1]\n[secret:github-token#1]\nauth=[secret:token#2]\n"}"#
        );
        let out = r().redact(&format!(
            "send: b'GET / HTTP/1.1\\r\\nAuthorization: token {tok}\\r\\nCookie: a=b1234567; c=d\\r\\nAccept: */*\\r\\n'"
        ));
        assert_eq!(
            out.text,
            "send: b'GET / HTTP/1.1\\r\\nAuthorization: token [secret:authorization#1]\\r\\nCookie: [secret:cookie#1]\\r\\nAccept: */*\\r\\n'"
        );
        let out = r().redact("Cookie: sessionid=8f2k3j4h5g6f; csrftoken=Zx9Yw8Vu7T\nnext");
        assert_eq!(out.text, "Cookie: [secret:cookie#1]\nnext");
        let out = r().redact("Set-Cookie: session=a8F3kd92Lq0z; Path=/; HttpOnly");
        assert_eq!(
            out.text,
            "Set-Cookie: session=[secret:cookie#1]; Path=/; HttpOnly"
        );
        hides(
            r#"curl -b x -H "Cookie: sid=7Hs8Dk2Lq" url"#,
            "7Hs8Dk2Lq",
            "cookie",
        );
        // Prose around the words.
        same(
            "polkitd[512]: Operator of unix-session:1 successfully authenticated as unix-user:root to gain ONE-SHOT authorization for action org.freedesktop.systemd1.manage-units",
        );
        same("app[9]: authorization: failed for user pi");
        hides(
            "Authorization: MyScheme k3y-Zx9Yw8Vu7Ts6",
            "k3y-Zx9Yw8Vu7Ts6",
            "authorization",
        );
        same("Bearer token expired, refreshing");
        same("HTTP Basic authentication failed");
        same("WWW-Authenticate: Basic realm=\"pimainteno\"");
    }

    #[test]
    fn assignments() {
        let cases: &[(&str, &str, &str)] = &[
            ("password=hunter2", "hunter2", "password"),
            ("password=1234", "1234", "password"),
            ("DB_PASS: 123456", "123456", "password"),
            ("Cookie: sid=1234", "sid=1234", "cookie"),
            ("password = hunter2", "hunter2", "password"),
            ("password: hunter2", "hunter2", "password"),
            (r#"{"password": "hunt er2"}"#, "hunt er2", "password"),
            (
                r#"{"password":"hunter2","user":"bob"}"#,
                "hunter2",
                "password",
            ),
            ("DB_PASSWORD=hunter2", "hunter2", "password"),
            ("DB_PASS=hunter2", "hunter2", "password"),
            ("MYSQL_PWD=hunter2", "hunter2", "password"),
            ("export PGPASSWORD=\"hunter2\"", "hunter2", "password"),
            ("export DB_PASSWD='hunter2'", "hunter2", "password"),
            ("mysqldump --password hunter2 shop", "hunter2", "password"),
            ("mysqldump --password=hunter2 shop", "hunter2", "password"),
            ("  password: 'hunter2'  # prod", "hunter2", "password"),
            (
                "{'PASSWORD': 'hunter2', 'HOST': 'db'}",
                "hunter2",
                "password",
            ),
            ("dbPassword: hunter2", "hunter2", "password"),
            ("spring.datasource.password=hunter2", "hunter2", "password"),
            ("psk=\"wifi-passphrase-1\"", "wifi-passphrase-1", "password"),
            (
                "machine api.example.com login bob password hunter2",
                "hunter2",
                "password",
            ),
            ("curl -u bob:hunter2 https://x", "hunter2", "password"),
            ("client_secret=Zq8wE7rT6yU5", "Zq8wE7rT6yU5", "secret"),
            ("mySecretKey = \"hunter2x\"", "hunter2x", "secret"),
            ("SECRET_KEY_BASE=4f9a2c1d8e7b", "4f9a2c1d8e7b", "secret"),
            ("credentials: c2VjcmV0Y3JlZHM", "c2VjcmV0Y3JlZHM", "secret"),
            ("GITHUB_TOKEN=abc123def456ghi", "abc123def456ghi", "token"),
            ("access_token=a8F3kd92Lq0z&state=x", "a8F3kd92Lq0z", "token"),
            ("\"_authToken\": \"f00dfeed1234\"", "f00dfeed1234", "token"),
            ("X-Auth-Token: 9f8e7d6c5b4a", "9f8e7d6c5b4a", "token"),
            (
                "auth = \"dXNlcjpwYXNzd29yZA==\"",
                "dXNlcjpwYXNzd29yZA==",
                "token",
            ),
            ("api_key=Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6", "api-key"),
            ("apikey: Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6", "api-key"),
            ("X-API-Key: Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6", "api-key"),
            ("--api-key Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6", "api-key"),
            ("access_key: AB12CD34EF56", "AB12CD34EF56", "api-key"),
            (
                "private_key = \"c2VjcmV0a2V5\"",
                "c2VjcmV0a2V5",
                "private-key",
            ),
            (
                "login(\\\"password\\\": \\\"hunter2\\\")",
                "hunter2",
                "password",
            ),
            (
                r#"{"msg": "retry with password=\"hunter2\""}"#,
                "hunter2",
                "password",
            ),
        ];
        for &(text, secret, kind) in cases {
            hides(text, secret, kind);
        }
        let out = r().redact("password=hunter2");
        assert_eq!(out.text, "password=[secret:password#1]");
        let out =
            r().redact("GET /cb?access_token=a8F3kd92Lq0z&state=x&client_secret=Zq8&wE7 HTTP/1.1");
        assert_eq!(
            out.text,
            "GET /cb?access_token=[secret:token#1]&state=x&client_secret=[secret:secret#1] HTTP/1.1"
        );
        // A value not redacted is searched again.
        let out = r().redact(
            "token_url=https://h/cb?access_token=abc123XYZ789&x=1 password_file=password=hunter2",
        );
        assert_eq!(
            out.text,
            "token_url=https://h/cb?access_token=[secret:token#1]&x=1 password_file=password=[secret:password#1]"
        );
        let out = r().redact("export DB_PASSWORD=\"hunter2\"");
        assert_eq!(out.text, "export DB_PASSWORD=\"[secret:password#1]\"");
        let aws = aws_secret();
        hides(
            &format!("aws_secret_access_key = {aws}"),
            &aws,
            "aws-secret",
        );
        hides(&format!("AWS_SECRET_ACCESS_KEY={aws}"), &aws, "aws-secret");
        hides(
            &format!(r#""SecretAccessKey": "{aws}","#),
            &aws,
            "aws-secret",
        );
    }

    #[test]
    fn not_values() {
        for text in [
            "password=",
            "password: ",
            "password = null",
            "\"password\": null",
            "'password': None",
            "password: \"\"",
            "password=***",
            "password: ********",
            "password=<redacted>",
            "password: [REDACTED]",
            "password=${DB_PASSWORD}",
            "password=$DB_PASSWORD",
            "password: \"{{ vault_db_password }}\"",
            "password: !vault |",
            "wifi_password: !secret wifi_password",
            "password_file=/run/secrets/db",
            "--password-file /etc/pimainteno/key",
            "token_count=1234",
            "max_tokens=4096",
            "\"prompt_tokens\": 120, \"completion_tokens\": 80, \"total_tokens\": 200",
            "token_type=bearer",
            "PWD=/home/pi/project",
            "OLDPWD=/home/pi",
            "key-mgmt=wpa-psk",
            "public_key: ssh-ed25519",
            "password = config.password",
            "password = getpass()",
            "let password = String::new();",
            "fn login(password: &str, token: String) -> bool",
            "    server_key: ActiveCertifiedKey<'_>,",
            "    let secrets = ConnectionSecrets::new_resumed(random, suite);",
            "    master_secret: ms,",
            "        ExtendedMasterSecret => 0x0017,",
            "        TLS_PSK_WITH_AES_128_GCM_SHA256 => 0x00a8,",
            "    Ok(ConnectionTrafficSecrets::Aes128Gcm { key, iv })",
            "    priv_key: ring_like::agreement::EphemeralPrivateKey,",
            "    pub(crate) cookie: Option<PayloadU16<NonEmpty>>,",
            "    fn check(&self, password: Password) -> bool",
            "LoadCredential=web-password:/etc/pimainteno/web-password",
            "format!(\"LoadCredential={WEB_PASSWORD_CREDENTIAL}:{}\", path)",
            "--- PASS: TestDouble/one_two (0.00s)",
            "credential: name `CODEX_API_KEY` as the provider's `env_key`",
            "Commandline: apt-get install -y google-cloud-cli-gke-gcloud-auth-plugin=528.0.0-0",
            "auth_plugin=caching_sha2_password",
            "        creds: *mut *mut sd_bus_creds,",
            "    pub fn sd_bus_get_creds_mask(bus: *mut sd_bus, creds_mask: *mut u64) -> c_int;",
            "Access-Control-Allow-Credentials: hello",
            "            Self::RsaPrivateKey => b\"RSA PRIVATE KEY\",",
            "NL80211_ATTR_SAE_PASSWORD = 277,",
            "pub const SECRETMEM_MAGIC: u32 = 1397048141;",
            "pub const IFLA_INET6_TOKEN: _bindgen_ty_7 = _bindgen_ty_7::IFLA_INET6_TOKEN;",
            "    pub log_passwd: __u32,",
            "        dot2_token: node.dot2_token,",
            "    trait Secret: ZeroizeOnDrop + Zeroize {}",
            "    let first_pass = FirstPass {",
            "    let credential = entry?;",
            "// Emojis in the remaining blocks of the Basic Multilingual Plane",
            "let c = format!(\"LoadCredential=web-password:{}\", p.display());",
            "api_key: Option<String>,",
            "password: str",
            "token: Token",
            "password = user_password",
            "passwd: password updated successfully",
            "# PASS: 12",
            "PASS: 3",
            "auth: none",
            "auth=sha256",
            "token: invalid",
            "secret: false",
        ] {
            same(text);
        }
    }

    #[test]
    fn prose_with_secret_words() {
        for text in [
            "Dec 03 10:00:00 pi sshd[1234]: Failed password for invalid user admin from 203.0.113.9 port 5555 ssh2",
            "Dec 03 10:00:00 pi sshd[1234]: Accepted publickey for pi from 10.0.0.2 port 50000 ssh2: ED25519 SHA256:uN4kOUZ1ZQy4ZcVVbdDRR9X1xG3Lq0h9r5k8s7d6f5e",
            "Dec 03 10:00:00 pi sshd[1234]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=pi",
            "Dec 03 10:00:00 pi sudo[99]: pam_unix(sudo:auth): auth could not identify password for [pi]",
            "psql: error: connection to server at \"db\" (10.0.0.5), port 5432 failed: FATAL:  password authentication failed for user \"app\"",
            "app[12]: invalid token in line 3",
            "wpa_supplicant[640]: wlan0: WPA: Key negotiation completed with aa:bb:cc:dd:ee:ff [PTK=CCMP GTK=CCMP]",
            "kernel: Key type dns_resolver registered",
            "The server's host key: ssh-ed25519 SHA256:abc",
            "mysql: [Warning] Using a password on the command line interface can be insecure.",
            "Author: Jane Doe <jane@example.com>",
            "ValueError: token must be a string",
        ] {
            same(text);
        }
    }

    #[test]
    fn well_known_tokens() {
        let b36 = rep("a1B2c3", 6);
        let cases: Vec<(String, &str)> = vec![
            (aws_id(), "aws-key"),
            (format!("ASIA{}", rep("Z9Y8", 4)), "aws-key"),
            (gh(), "github-token"),
            (format!("gho_{b36}"), "github-token"),
            (format!("ghs_{b36}"), "github-token"),
            (
                format!("github_pat_11{}_{}", rep("AB3", 7), rep("x9Z", 19)),
                "github-token",
            ),
            (format!("glpat-{}", rep("x9Z-", 5)), "gitlab-token"),
            (format!("glrt-{}", rep("Ab1", 7)), "gitlab-token"),
            (
                format!("xoxb-{}-{}-{}", "1234567890", "0987654321", rep("aB3", 8)),
                "slack-token",
            ),
            (
                format!("xoxp-{}-{}", "1234567890", rep("aB3", 8)),
                "slack-token",
            ),
            (
                format!("xapp-1-A{}-{}", "0123456789", rep("ab12", 8)),
                "slack-token",
            ),
            (format!("sk-{}", rep("Ab3d", 12)), "openai-key"),
            (format!("sk-proj-{}", rep("Ab3d_", 20)), "openai-key"),
            (
                format!("sk-ant-api03-{}", rep("Ab3d-", 18)),
                "anthropic-key",
            ),
            (format!("AIza{}", &rep("Sy1_", 9)[..35]), "google-api-key"),
            (format!("sk_live_{}", rep("4eC39H", 4)), "stripe-key"),
            (format!("rk_test_{}", rep("4eC39H", 4)), "stripe-key"),
            (format!("pk_live_{}", rep("4eC39H", 4)), "stripe-key"),
            (jwt(), "jwt"),
            (format!("npm_{}", rep("a1B2", 9)), "npm-token"),
            (
                format!("pypi-AgEIcHlwaS5vcmc{}", rep("CJDU3", 12)),
                "pypi-token",
            ),
            (
                format!("123456789:AA{}", &rep("Hk3_x", 7)[..33]),
                "telegram-token",
            ),
            (
                format!("SG.{}.{}", rep("aB3d", 6), rep("xY9z", 11)),
                "sendgrid-key",
            ),
            (format!("SK{}", rep("0a1b2c3d", 4)), "twilio-key"),
            (format!("hf_{}", rep("aBcDeF", 6)), "huggingface-token"),
            (
                format!("tskey-auth-k{}-{}", rep("Ab3", 5), rep("Cd4", 8)),
                "tailscale-key",
            ),
            (format!("AGE-SECRET-KEY-1{}", rep("QZ3", 20)), "age-key"),
        ];
        for (tok, kind) in &cases {
            // Alone, in a journal line, in JSON, as an env line, in a diff.
            hides(tok, tok, kind);
            hides(
                &format!("Dec 03 10:00:00 pi app[42]: using {tok} for upload"),
                tok,
                kind,
            );
            hides(
                &format!("{{\"level\":\"info\",\"cfg\":{{\"value\":\"{tok}\"}}}}"),
                tok,
                kind,
            );
            hides(&format!("+SOME_VALUE={tok}\n"), tok, kind);
            let out = r().redact(&format!("a {tok} b"));
            assert_eq!(out.text, format!("a [secret:{kind}#1] b"));
        }
        hides(
            &format!(
                "hook: https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{}",
                rep("aB3d", 6)
            ),
            "T0123ABCD/B0123ABCD",
            "slack-webhook",
        );
        let out = r().redact(&format!(
            "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{}",
            rep("aB3d", 6)
        ));
        assert_eq!(
            out.text,
            "https://hooks.slack.com/services/[secret:slack-webhook#1]"
        );
        let out = r().redact(&format!(
            "https://discord.com/api/webhooks/123456789012345678/{}",
            rep("aB3d-", 12)
        ));
        assert_eq!(
            out.text,
            "https://discord.com/api/webhooks/123456789012345678/[secret:discord-webhook#1]"
        );
        let tg = format!("123456789:AA{}", &rep("Hk3_x", 7)[..33]);
        let out = r().redact(&format!("GET https://api.telegram.org/bot{tg}/getMe"));
        assert_eq!(
            out.text,
            "GET https://api.telegram.org/bot[secret:telegram-token#1]/getMe"
        );
        hides(
            "pi:$y$j9T$Vq6fE4mTq0rG3U1dKcS1b/$bJ9yZpHf3k7Q2lXWcY0sN1aM4tRgUeVvBxHnIoPqL5D:19700:0:99999:7:::",
            "bJ9yZpHf3k7Q2lXWcY0sN1aM4tRgUeVvBxHnIoPqL5D",
            "password-hash",
        );
        hides(
            "admin:$2y$10$abcdefghijklmnopqrstuuN1aM4tRgUeVvBxHnIoPqL5DbJ9yZpHf",
            "N1aM4tRgUeVvBxHnIoPqL5D",
            "password-hash",
        );
        // A token inside a longer value: the whole value goes.
        let out = r().redact(&format!("password=\"{} and more\" end", gh()));
        assert_eq!(out.text, "password=\"[secret:password#1]\" end");
        let out = r().redact(&format!(
            "Authorization: Digest username=\"bob\", response=\"{}\"",
            gh()
        ));
        assert_eq!(out.text, "Authorization: Digest [secret:authorization#1]");
        // A key that names a specific kind keeps that kind.
        let out = r().redact(&format!("GITHUB_TOKEN={}", gh()));
        assert_eq!(out.text, "GITHUB_TOKEN=[secret:github-token#1]");
        let out = r().redact(&format!("Authorization: Bearer {}", jwt()));
        assert_eq!(out.text, "Authorization: Bearer [secret:jwt#1]");
    }

    #[test]
    fn corpus_of_contexts() {
        let tok = gh();
        let aws = aws_id();
        let traceback = format!(
            r#"Traceback (most recent call last):
  File "/srv/app/main.py", line 42, in <module>
    connect(settings)
  File "/srv/app/db.py", line 7, in connect
    raise ConnectionError(f"cannot connect with {{settings!r}}")
ConnectionError: cannot connect with {{'HOST': 'db', 'USER': 'app', 'PASSWORD': 'Tr0ub4dor&3', 'API_TOKEN': '{tok}', 'OPTIONS': {{'sslmode': 'require'}}}}
"#
        );
        let out = r().redact(&traceback);
        assert!(
            !out.text.contains("Tr0ub4dor&3") && !out.text.contains(&tok),
            "{}",
            out.text
        );
        assert!(
            out.text
                .contains("File \"/srv/app/db.py\", line 7, in connect")
        );
        assert!(out.text.contains("'HOST': 'db', 'USER': 'app'"));
        assert!(out.text.contains("'sslmode': 'require'"));

        let env = format!(
            "# database\nDB_HOST=db.lan\nDB_USER=app\nDB_PASSWORD=Tr0ub4dor&3\nAWS_ACCESS_KEY_ID={aws}\nAWS_SECRET_ACCESS_KEY={}\nDEBUG=false\n",
            aws_secret()
        );
        let out = r().redact(&env);
        assert_eq!(
            out.text,
            "# database\nDB_HOST=db.lan\nDB_USER=app\nDB_PASSWORD=[secret:password#1]\nAWS_ACCESS_KEY_ID=[secret:aws-key#1]\nAWS_SECRET_ACCESS_KEY=[secret:aws-secret#1]\nDEBUG=false\n"
        );

        let diff = format!(
            "diff --git a/.env b/.env\nindex 3b18e51..a1f9c02 100644\n--- a/.env\n+++ b/.env\n@@ -1,2 +1,3 @@\n-API_KEY=oldKey0123456\n+API_KEY=newKey6543210\n+GITHUB_TOKEN={tok}\n"
        );
        let out = r().redact(&diff);
        assert_eq!(
            out.text,
            "diff --git a/.env b/.env\nindex 3b18e51..a1f9c02 100644\n--- a/.env\n+++ b/.env\n@@ -1,2 +1,3 @@\n-API_KEY=[secret:api-key#1]\n+API_KEY=[secret:api-key#2]\n+GITHUB_TOKEN=[secret:github-token#1]\n"
        );

        let yaml = "database:\n  host: db\n  username: app\n  password: \"Tr0ub4dor&3\"\nsmtp:\n  password: hunter22\n  port: 587\n";
        let out = r().redact(yaml);
        assert_eq!(
            out.text,
            "database:\n  host: db\n  username: app\n  password: \"[secret:password#1]\"\nsmtp:\n  password: [secret:password#2]\n  port: 587\n"
        );

        let json = format!(
            r#"{{"ts":"2024-12-03T10:00:00Z","level":"error","msg":"upload failed","aws_access_key_id":"{aws}","token":"{tok}","status":403}}"#
        );
        let out = r().redact(&json);
        assert!(!out.text.contains(&aws) && !out.text.contains(&tok));
        assert!(out.text.contains(r#""status":403"#));

        let curl = format!(
            "curl -sS -X POST -H 'Content-Type: application/json' -H \"Authorization: Bearer {tok}\" -d '{{\"password\": \"Tr0ub4dor&3\"}}' https://admin:s3cretpw@api.example.com/v1/login"
        );
        let out = r().redact(&curl);
        assert_eq!(
            out.text,
            "curl -sS -X POST -H 'Content-Type: application/json' -H \"Authorization: Bearer [secret:github-token#1]\" -d '{\"password\": \"[secret:password#1]\"}' https://admin:[secret:url-password#1]@api.example.com/v1/login"
        );
    }

    #[test]
    fn ordinary_lines_unchanged() {
        for text in [
            "Dec 03 10:00:00 pi systemd[1]: myapp.service: Main process exited, code=exited, status=1/FAILURE",
            "Dec 03 10:00:00 pi systemd[1]: myapp.service: Failed with result 'exit-code'.",
            "Dec 03 10:00:00 pi systemd[1]: myapp.service: Consumed 1.234s CPU time, 12.5M memory peak.",
            "Dec 03 10:00:00 pi systemd[1]: Started myapp.service - My App.",
            "Dec 03 10:00:00 pi kernel: usb 1-1.3: new high-speed USB device number 4 using dwc_otg",
            "Dec 03 10:00:00 pi dhcpcd[455]: eth0: leased 192.168.1.23 for 86400 seconds",
            "Dec 03 10:00:00 pi app[1234]: listening on 0.0.0.0:8080 (pid 1234)",
            "commit 3f2a9c1e7b4d5a6f8e9d0c1b2a3f4e5d6c7b8a9f",
            "HEAD is now at 3f2a9c1 fix: retry",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  pimainteno_0.1.0_arm64.deb",
            "request 550e8400-e29b-41d4-a716-446655440000 done in 12 ms",
            "2024-12-03T10:00:00.123456+01:00 started",
            "/home/pi/.cache/pip/wheels/a1/b2/c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2",
            "/nix/store/9y3lb0a2k1pqxm4a9f2xjqcwdz0f5y7v-openssl-3.0.12/lib/libssl.so.3",
            "node_modules/.pnpm/lodash@4.17.21_a1b2c3d4e5f6/node_modules/lodash/index.js",
            "libfoo-1.2.3-a1b2c3d4e5f6.so",
            "\"integrity\": \"sha512-v2kDEe57lecTulaDIuNTPy3Ry4gLGJ6Z1O3vE1krgXZNrsQ+LFTGHVxVjcXPs17LhbZVGedAJv8XZ1tvj5FvSg==\"",
            "https://example.com/a?b=c&page=2",
            "mail sent to alice@example.com",
            "ssh pi@raspberrypi.local -p 2222",
            "Connection to pi@10.0.0.5 closed.",
            "  File \"/usr/lib/python3/dist-packages/requests/adapters.py\", line 501, in send",
            "thread 'main' panicked at src/main.rs:10:5:\ncalled `Result::unwrap()` on an `Err` value: Os { code: 2, kind: NotFound, message: \"No such file or directory\" }",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
            "   0: std::panicking::begin_panic_handler\n             at /rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/std/src/panicking.rs:645:5",
            "key=value count=3 status=ok",
            "Reading package lists... Done",
            "Get:1 http://deb.debian.org/debian bookworm/main arm64 libssl3 arm64 3.0.15-1~deb12u1 [1,812 kB]",
            "eyes.eyebrows and keyboard.monkey",
            "session opened for user pi(uid=1000) by (uid=0)",
            "task-queue-worker-something-long started",
            "$6 per month",
            "echo \"$1$HOME/some/path/here\"",
            "",
            "\n\n",
        ] {
            same(text);
        }
    }

    #[test]
    fn numbering_and_counts() {
        let a = format!("ghp_{}", rep("a1B2", 9));
        let b = format!("ghp_{}", rep("c3D4", 9));
        let text = format!("first {a}\nsecond {b}\nagain {a}\npassword=hunter2\n");
        let out = r().redact(&text);
        assert_eq!(
            out.text,
            "first [secret:github-token#1]\nsecond [secret:github-token#2]\nagain [secret:github-token#1]\npassword=[secret:password#1]\n"
        );
        assert_eq!(out.counts.get("github-token"), Some(&2));
        assert_eq!(out.counts.get("password"), Some(&1));
        assert_eq!(out.total(), 3);
        // A value found once is hidden where it appears again alone.
        let out = r().redact(
            "DB_PASSWORD=Tr0ub4dor3\npsql: password \"Tr0ub4dor3\" rejected; Tr0ub4dor3x stays\n",
        );
        assert_eq!(
            out.text,
            "DB_PASSWORD=[secret:password#1]\npsql: password \"[secret:password#1]\" rejected; Tr0ub4dor3x stays\n"
        );
        assert_eq!(out.total(), 1);
        assert_eq!(Redacted::default().total(), 0);
    }

    #[test]
    fn idempotent() {
        let text = format!(
            "postgres://app:hunter2@db/x\nAuthorization: Bearer {}\npassword=hunter2\n{}\n{}\nCookie: a=b1234567\nSet-Cookie: s=Zx9Yw8Vu7T; Path=/\n[secret:password#7] stays\n{{\"secret\": \"[secret:token#2]\"}}\n",
            rep("abc9", 8),
            pem("RSA PRIVATE KEY"),
            gh()
        );
        let once = r().redact(&text);
        let twice = r().redact(&once.text);
        assert_eq!(twice.text, once.text);
        assert_eq!(twice.total(), 0, "{:?}", twice.counts);
        assert!(once.text.contains("[secret:password#7] stays"));
    }

    #[test]
    fn user_patterns_and_literals() {
        let user = vec![
            r"corp-[a-z0-9]{8}".to_string(),
            r"pin (\d{4})".to_string(),
            r"(?P<pre>vault:)(?P<secret>[A-Z]{6})".to_string(),
        ];
        let lits = vec!["Sup3rKey!".to_string(), "abc".to_string(), String::new()];
        let red = Redactor::new(&user, &lits).unwrap();
        let out = red.redact("id corp-1a2b3c4d; pin 1234; vault:QWERTY; key Sup3rKey! and abc");
        assert_eq!(
            out.text,
            "id [secret:custom#1]; pin [secret:custom#2]; vault:[secret:custom#3]; key [secret:configured#1] and abc"
        );
        assert_eq!(out.counts.get("custom"), Some(&3));
        assert_eq!(out.counts.get("configured"), Some(&1));

        let err = Redactor::new(&["ok-[0-9]+".to_string(), "(unclosed".to_string()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redact[1]") && err.contains("(unclosed"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = Redactor::new(&["x*".to_string()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty string"), "{err}");
    }

    #[test]
    fn check_pattern_messages() {
        assert_eq!(Redactor::check_pattern(r"corp-\w{8}"), Ok(()));
        assert_eq!(Redactor::check_pattern(r"(?i)token-[a-f0-9]+"), Ok(()));
        assert_eq!(Redactor::check_pattern("caf\u{e9}-[0-9]+"), Ok(()));
        let e = Redactor::check_pattern("(abc").unwrap_err();
        assert!(e.starts_with("invalid regex: ") && !e.contains('\n'), "{e}");
        let e = Redactor::check_pattern("[z-a]").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        for empty in ["", "a*", "x|", "^", "(?m)^$", r"\b", "a?b?"] {
            assert_eq!(
                Redactor::check_pattern(empty),
                Err("matches the empty string".to_string()),
                "{empty}"
            );
        }
    }

    #[test]
    fn secret_files() {
        for yes in [
            ".env",
            "/srv/app/.env",
            ".env.local",
            ".env.production",
            "prod.env",
            "server.pem",
            "id_rsa",
            "/home/pi/.ssh/id_ed25519",
            "id_ecdsa_sk",
            "id_dsa",
            "tls.key",
            "credentials",
            "credentials.json",
            "secrets.yaml",
            ".netrc",
            ".pgpass",
            "cert.p12",
            "cert.PFX",
            ".npmrc",
            ".pypirc",
            "release.keystore",
            "app.jks",
            ".ENV",
            "ID_RSA",
            ".git-credentials",
            "home.nmconnection",
            "wpa_supplicant.conf",
            "/etc/shadow",
        ] {
            assert!(is_secret_file(Path::new(yes)), "{yes}");
        }
        for no in [
            ".env.example",
            ".env.sample",
            ".env.template",
            ".env.local.example",
            "env",
            ".envrc.d",
            "README.md",
            "id_rsa.pub",
            "main.rs",
            "key.rs",
            "keyboard.c",
            ".env/config",
            "secrets",
            "my_credentials_test.py",
            "/",
            "",
        ] {
            assert!(!is_secret_file(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn no_panics_on_odd_input() {
        let red =
            Redactor::new(&[r"id=(.{4})".to_string()], &["\u{e9}t\u{e9}s".to_string()]).unwrap();
        // Matches cut characters in two: spans are widened, never a panic.
        let odd = Redactor::new(&[r"(?s).{3}\xff?".to_string()], &[]).unwrap();
        let plain = r();
        // Pseudo-random bytes, made valid UTF-8 the lossy way.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let len = (round * 37) % 2000;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Bias towards the characters the rules look at.
                    const ALPHABET: &[u8] = b"-=:\"' \n\\/@$[]{}#*AKIAghp_sk-eyJpassword token Bearer BEGIN PRIVATE KEY-----END";
                    if x % 3 == 0 { ALPHABET[(x >> 8) as usize % ALPHABET.len()] } else { (x >> 16) as u8 }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            for rd in [&red, &plain] {
                let out = rd.redact(&text);
                let again = rd.redact(&out.text);
                assert_eq!(again.text, out.text, "from {text:?}");
            }
            let _ = odd.redact(&text);
        }
        // Long lines.
        let long = "a".repeat(1 << 20);
        assert_eq!(plain.redact(&long).text, long);
        let long = format!("password={}", "x9".repeat(1 << 19));
        assert_eq!(plain.redact(&long).text, "password=[secret:password#1]");
        let long = "password=".repeat(100_000);
        let _ = plain.redact(&long);
        let long = "-----BEGIN PRIVATE KEY-----".repeat(10_000);
        let _ = plain.redact(&long);
        let long = "\u{1F600}key: \u{e9}".repeat(50_000);
        let _ = red.redact(&long);
        // Nested and overlapping.
        let nested = format!(
            "password=\"postgres://u:{}@h/d\" Authorization: Bearer {}",
            gh(),
            jwt()
        );
        let out = plain.redact(&nested);
        assert!(
            !out.text.contains(&gh()) && !out.text.contains(&jwt()),
            "{}",
            out.text
        );
        let _ = plain.redact("[secret:");
        let _ = plain.redact("[secret:x#");
        let _ = plain.redact("-----BEGIN ");
        let _ = plain.redact("-----BEGIN PRIVATE KEY-----");
        let _ = plain.redact("-----BEGIN PRIVATE KEY-----\\n");
        let _ = plain.redact("\u{e9}-----BEGIN PRIVATE KEY-----\\n\u{e9}\"");
    }
}
