//! JSON from a model or a server, read strictly: an object with a key
//! twice, at any depth, is refused. serde_json keeps the last of two equal
//! keys while other parsers keep the first, so such a reply means one thing
//! to the check and another to whoever reads it next.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// `text` as a JSON value, refused when an object repeats a key.
pub fn strict_from_str(text: &str) -> serde_json::Result<Value> {
    strict_from_slice(text.as_bytes())
}

/// [`strict_from_str`] of bytes.
pub fn strict_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(value) = Strict::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A [`Value`] whose objects were checked for repeated keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Finite in JSON text; Null like serde_json's own for the rest.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key \"{}\" appears twice in one object",
                    crate::text::shorten(&crate::text::printable_line(&key), 40)
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let ok = r#"{"a": [1, -2, 2.5, "x", null, true, {"b": {"c": 1}}], "d": {}}"#;
        assert_eq!(
            strict_from_str(ok).unwrap(),
            serde_json::from_str::<Value>(ok).unwrap()
        );
        for bad in [
            r#"{"action": "none", "action": "restart"}"#,
            r#"{"a": {"b": 1, "b": 2}}"#,
            r#"{"a": [{"x": 1}, {"y": 1, "y": 1}]}"#,
            // The same key written with an escape is the same key.
            r#"{"cause": 1, "caus\u0065": 2}"#,
        ] {
            let e = strict_from_str(bad).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{bad}: {e}");
        }
        // Equal keys in different objects are fine; trailing text is not.
        assert!(strict_from_str(r#"[{"a": 1}, {"a": 2}]"#).is_ok());
        assert!(strict_from_str(r#"{"a": 1} {"a": 2}"#).is_err());
    }
}
