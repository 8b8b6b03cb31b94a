//! Strict reading of admin API request bodies: a JSON document whose
//! meaning would depend on which of two things the parser keeps is refused
//! with a specific error instead of one silently winning.
//!
//! - an object with the same key twice (`{"weight_bps": 1, "weight_bps": 2}`);
//! - a NUL character in a string or a key (`"\u0000"`: ids, names and paths
//!   end at a NUL in the C world, so two readers could see two values).
//!
//! Nesting is bounded by serde_json's recursion limit (128), so a deeply
//! nested body is a 400, not a stack overflow.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::reply::ApiError;

/// Checks `body` (JSON) for duplicate keys and NUL characters; the error
/// names the JSON path and the position.
pub fn check(body: &[u8]) -> Result<(), ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Check { path: "$" }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| ApiError::invalid_request(format!("the body is refused: {error}")))
}

/// Walks one JSON value at `path`.
struct Check<'p> {
    path: &'p str,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Check<'_> {
    fn string<E: de::Error>(&self, value: &str) -> Result<(), E> {
        if value.contains('\0') {
            return Err(E::custom(format!(
                "{}: a string holds a NUL character (\\u0000)",
                self.path
            )));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.string(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let path = format!("{}[{index}]", self.path);
            if seq.next_element_seed(Check { path: &path })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}.{key}", self.path);
            Check { path: &path }.string::<A::Error>(&key)?;
            if !seen.insert(key) {
                return Err(de::Error::custom(format!(
                    "{path}: the key appears twice in one object; give it once"
                )));
            }
            map.next_value_seed(Check { path: &path })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        check(body.as_bytes()).expect_err(body).message
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let message = refused(r#"{"entries": [{"weight_bps": 1, "weight_bps": 2}]}"#);
        assert!(message.contains("$.entries[0].weight_bps"), "{message}");
        assert!(message.contains("twice"), "{message}");
        assert!(refused(r#"{"a": 1, "a": 1}"#).contains("$.a"));
    }

    #[test]
    fn nul_characters_are_refused_in_values_and_keys() {
        assert!(refused(r#"{"name": "a\u0000b"}"#).contains("$.name: a string holds a NUL"));
        assert!(refused(r#"{"a\u0000": 1}"#).contains("NUL"));
    }

    #[test]
    fn deep_nesting_and_trailing_data_are_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(refused(&deep).contains("recursion limit"));
        assert!(refused(r#"{"a": 1} {"#).contains("trailing"));
    }

    #[test]
    fn ordinary_bodies_pass() {
        check(br#"{"entries": [{"revision_id": "r", "weight_bps": 10000}], "a": {"a": [1, 2.5, null, true]}}"#)
            .expect("ordinary body");
    }
}
