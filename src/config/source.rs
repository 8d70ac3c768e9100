//! One configuration file: its text, its format, and where a key is in it.
//!
//! Errors found after parsing (a bad duration, a duplicate project) name
//! the file and line of the offending key. serde does not keep positions,
//! so the keys are found again in the text, once per file: through toml's
//! spanned document for TOML, through a small scanner for JSON. Each
//! lookup is then a hash lookup and a binary search over the line starts,
//! so that a warning for each of thousands of projects stays linear.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::raw::RawConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// JSON by extension, TOML otherwise.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// One step of a key path: `project[2].path` is `[Key("project"), Index(2), Key("path")]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Turn `"llm.timeout"` or `"project.2.path"` into segments.
pub fn segs(path: &str) -> Vec<Seg> {
    path.split('.')
        .map(|p| match p.parse::<usize>() {
            Ok(i) => Seg::Index(i),
            Err(_) => Seg::Key(p.to_string()),
        })
        .collect()
}

/// A problem in the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// The key as the user wrote it, e.g. `[llm] timeout` or `[[project]] #2 path`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one load, reported together (exit code 78).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A configuration file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub format: Format,
    /// Every key path's offset and every line's start, found on the first
    /// lookup (most loads have no error to locate).
    index: OnceLock<Index>,
}

#[derive(Debug, Clone, Default)]
struct Index {
    /// `[Key("project"), Index(2), Key("path")]` → offset of that key (the
    /// first one, as serde's "first wins" lookups) or array element.
    keys: HashMap<Vec<Seg>, usize>,
    /// Byte offset at which each line starts.
    lines: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> SourceFile {
        SourceFile {
            format: Format::of(&path),
            path,
            text,
            index: OnceLock::new(),
        }
    }

    pub fn read(path: &Path) -> Result<SourceFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Ok(SourceFile::new(path.to_path_buf(), text))
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| Index {
            keys: match self.format {
                Format::Toml => toml_index(&self.text),
                Format::Json => json_index(&self.text),
            },
            lines: std::iter::once(0)
                .chain(
                    self.text
                        .bytes()
                        .enumerate()
                        .filter(|&(_, b)| b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect(),
        })
    }

    /// Deserialize into a raw fragment; syntax errors, wrong types and
    /// unknown keys come back with their line.
    pub fn parse(&self) -> Result<RawConfig, ConfigError> {
        match self.format {
            Format::Toml => toml::from_str(&self.text).map_err(|e| {
                let start = e.span().map(|s| s.start);
                ConfigError {
                    file: Some(self.path.clone()),
                    line: start.map(|s| self.line_at(s)),
                    key: start.and_then(|s| toml_key_at(&self.text, s)),
                    message: first_line(e.message()),
                }
            }),
            Format::Json => serde_json::from_str(&self.text).map_err(|e| {
                // serde_json appends " at line L column C": keep only the reason.
                let text = e.to_string();
                let message = match text.rfind(" at line ") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                ConfigError {
                    file: Some(self.path.clone()),
                    line: Some(e.line()).filter(|&l| l > 0),
                    key: None,
                    message,
                }
            }),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        // Lines that start at or before the offset.
        self.index().lines.partition_point(|&start| start <= offset)
    }

    /// Line of the deepest part of `path` found in this file.
    pub fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let keys = &self.index().keys;
        let offset = (1..=path.len()).rev().find_map(|n| keys.get(&path[..n]))?;
        Some(self.line_at(*offset))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// Every key path of a TOML document and the offset of its key (of its
/// element, in an array).
fn toml_index(text: &str) -> HashMap<Vec<Seg>, usize> {
    use toml::de::{DeTable, DeValue};
    fn table(t: &DeTable, path: &mut Vec<Seg>, out: &mut HashMap<Vec<Seg>, usize>) {
        for (key, v) in t.iter() {
            path.push(Seg::Key(key.get_ref().to_string()));
            out.entry(path.clone()).or_insert(key.span().start);
            value(v, path, out);
            path.pop();
        }
    }
    fn value(v: &toml::Spanned<DeValue>, path: &mut Vec<Seg>, out: &mut HashMap<Vec<Seg>, usize>) {
        match v.get_ref() {
            DeValue::Table(t) => table(t, path, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    out.entry(path.clone()).or_insert(item.span().start);
                    value(item, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = HashMap::new();
    if let Ok(doc) = DeTable::parse(text) {
        table(doc.get_ref(), &mut Vec::new(), &mut out);
    }
    out
}

/// The key whose value (or name) covers `offset`, as `[section] key`, for
/// serde errors that only carry a position.
fn toml_key_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    // A table's own span covers only its header, so every table is searched.
    fn walk(table: &DeTable, offset: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            let found = match value.get_ref() {
                DeValue::Table(t) => walk(t, offset, path),
                DeValue::Array(items) => items.iter().any(|item| match item.get_ref() {
                    DeValue::Table(t) => walk(t, offset, path),
                    _ => false,
                }),
                _ => false,
            };
            let (k, v) = (key.span(), value.span());
            if found || (k.start..v.end.max(k.end)).contains(&offset) {
                return true;
            }
            path.pop();
        }
        false
    }
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(doc.get_ref(), offset, &mut path);
    match path.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [section, rest @ ..] => Some(format!("[{section}] {}", rest.join("."))),
    }
}

/// Every key path of a JSON text and the offset of its key (of its
/// element, in an array). A tiny scanner: the text already parsed once
/// (so its nesting is within serde_json's limit).
fn json_index(text: &str) -> HashMap<Vec<Seg>, usize> {
    fn value(
        text: &str,
        pos: &mut usize,
        path: &mut Vec<Seg>,
        out: &mut HashMap<Vec<Seg>, usize>,
    ) -> Option<()> {
        let b = text.as_bytes();
        skip_ws(b, pos);
        match *b.get(*pos)? {
            b'{' => {
                *pos += 1;
                loop {
                    skip_ws(b, pos);
                    match *b.get(*pos)? {
                        b'}' => {
                            *pos += 1;
                            return Some(());
                        }
                        b'"' => {}
                        _ => return None,
                    }
                    let key_start = *pos;
                    let key = read_string(text, pos)?;
                    skip_ws(b, pos);
                    *pos += 1; // ':'
                    path.push(Seg::Key(key));
                    out.entry(path.clone()).or_insert(key_start);
                    value(text, pos, path, out)?;
                    path.pop();
                    skip_ws(b, pos);
                    if b.get(*pos) == Some(&b',') {
                        *pos += 1;
                    }
                }
            }
            b'[' => {
                *pos += 1;
                for i in 0.. {
                    skip_ws(b, pos);
                    if *b.get(*pos)? == b']' {
                        *pos += 1;
                        break;
                    }
                    path.push(Seg::Index(i));
                    out.entry(path.clone()).or_insert(*pos);
                    value(text, pos, path, out)?;
                    path.pop();
                    skip_ws(b, pos);
                    if b.get(*pos) == Some(&b',') {
                        *pos += 1;
                    }
                }
                Some(())
            }
            b'"' => read_string(text, pos).map(drop),
            _ => {
                // A number, true, false or null.
                while b
                    .get(*pos)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    *pos += 1;
                }
                Some(())
            }
        }
    }
    let mut out = HashMap::new();
    value(text, &mut 0, &mut Vec::new(), &mut out);
    out
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while b.get(*pos).is_some_and(|c| c.is_ascii_whitespace()) {
        *pos += 1;
    }
}

fn read_string(text: &str, pos: &mut usize) -> Option<String> {
    let b = text.as_bytes();
    let start = *pos;
    *pos += 1;
    while let Some(&c) = b.get(*pos) {
        *pos += 1;
        match c {
            b'\\' => *pos += 1,
            b'"' => return serde_json::from_str(&text[start..*pos]).ok(),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str, format: Format) -> SourceFile {
        let name = match format {
            Format::Toml => "x.toml",
            Format::Json => "x.json",
        };
        SourceFile::new(name.into(), text.into())
    }

    #[test]
    fn toml_lines_of_nested_keys() {
        let s = src(
            "[llm]\nprovider = \"none\"\ntimeout = \"1x\"\n\n[[project]]\npath = \"/a\"\n\n[[project]]\nname = \"b\"\npath = \"/b\"\n",
            Format::Toml,
        );
        assert_eq!(s.line_of(&segs("llm.timeout")), Some(3));
        assert_eq!(s.line_of(&segs("project.1.path")), Some(10));
        assert_eq!(s.line_of(&segs("project.0.path")), Some(6));
        // Missing key: the deepest part found.
        assert_eq!(s.line_of(&segs("llm.model")), Some(1));
    }

    #[test]
    fn json_lines_of_nested_keys() {
        let s = src(
            "{\n  \"llm\": {\"args\": [\"a,}\", \"b\"],\n    \"timeout\": \"1x\"},\n  \"project\": [\n    {\"path\": \"/a\"},\n    {\"name\": \"b\",\n     \"path\": \"/b\"}\n  ]\n}\n",
            Format::Json,
        );
        assert_eq!(s.line_of(&segs("llm.timeout")), Some(3));
        assert_eq!(s.line_of(&segs("project.1.path")), Some(7));
        assert_eq!(s.line_of(&segs("project.0")), Some(5));
        assert_eq!(s.line_of(&segs("llm.args.1")), Some(2));
    }
}
