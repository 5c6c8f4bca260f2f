//! Request bodies decoded the way Go's `encoding/json` (and so KES) decodes
//! them: a JSON key names a struct field if it equals the field's name or
//! equals it ignoring ASCII case.
//!
//! Every KES client is a Go program, and Go programs send whatever their
//! struct's field names are: old clients send `{"Allow": [...], "Deny":
//! [...]}` for a policy, because their struct has no JSON tags. KES read
//! those because Go matches names case-insensitively; with serde's exact
//! matching they would be ignored and the policy stored empty.
//!
//! Where Go lets the last of two keys naming the same field win (`"allow"`
//! and `"Allow"` in one object), keyward refuses the body: serde reports the
//! duplicate field, and the request is a 400. No Go client sends such a body,
//! and two readings of one request are how parser-differential bugs start.
//!
//! The adapter wraps serde_json's deserializer and changes nothing but the
//! struct keys it hands to derived `Deserialize` impls: a key that matches a
//! field exactly costs one comparison more, and no value is copied.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Decodes `bytes` as one JSON value (trailing whitespace only), matching
/// struct fields as Go does.
pub fn from_slice<'a, T: de::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Folding(&mut de))?;
    de.end()?;
    Ok(value)
}

/// The field of `fields` that `key` names: itself if exact, else the first
/// equal ignoring ASCII case.
fn canonical(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    if fields.contains(&key) {
        return None;
    }
    fields.iter().copied().find(|f| f.eq_ignore_ascii_case(key))
}

/// A deserializer whose structs match their keys case-insensitively, all
/// the way down.
struct Folding<D>(D);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(Fold(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Folding<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Fold(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Fold(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Fold(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Fold(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, FoldStruct { visitor, fields })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        // Request bodies have no enums; variants match exactly, as in serde.
        self.0.deserialize_enum(name, variants, visitor)
    }
}

/// A visitor whose nested maps, sequences and options stay folding.
struct Fold<V>(V);

macro_rules! visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Fold<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i64(i64),
        visit_i128(i128),
        visit_u64(u64),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Folding(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Folding(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(FoldSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(FoldMap { map, fields: None })
    }
}

/// The visitor of a struct: its map's keys are matched against `fields`.
struct FoldStruct<V> {
    visitor: V,
    fields: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FoldStruct<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(FoldMap { map, fields: Some(self.fields) })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_seq(FoldSeq(seq))
    }
}

struct FoldSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for FoldSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct FoldMap<A> {
    map: A,
    /// The struct's fields, when the map is a struct.
    fields: Option<&'static [&'static str]>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FoldMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        match self.fields {
            Some(fields) => self.map.next_key_seed(KeySeed { seed, fields }),
            None => self.map.next_key_seed(FoldSeed(seed)),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A seed whose value is deserialized folding.
struct FoldSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FoldSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Folding(d))
    }
}

/// The seed of a struct key: the key's text is read and, if it names a
/// field only ignoring case, handed on as that field's name.
struct KeySeed<K> {
    seed: K,
    fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        let key = d.deserialize_str(KeyTextVisitor)?;
        let name = match &key {
            KeyText::Borrowed(s) => canonical(s, self.fields).unwrap_or(s),
            KeyText::Owned(s) => canonical(s, self.fields).unwrap_or(s.as_str()),
        };
        self.seed.deserialize(de::value::StrDeserializer::<D::Error>::new(name))
    }
}

/// A key's text: borrowed from the input when it has no escapes.
enum KeyText<'de> {
    Borrowed(&'de str),
    Owned(String),
}

struct KeyTextVisitor;

impl<'de> Visitor<'de> for KeyTextVisitor {
    type Value = KeyText<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(KeyText::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(KeyText::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Policy {
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        deny: Vec<String>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Outer {
        inner: Vec<Policy>,
        #[serde(default)]
        by_name: BTreeMap<String, Policy>,
        maybe: Option<Policy>,
    }

    #[test]
    fn fields_match_ignoring_case_as_in_go() {
        let p: Policy = from_slice(br#"{"Allow": ["/a"], "DENY": ["/b"], "Info": {"name": ""}}"#).unwrap();
        assert_eq!(p, Policy { allow: vec!["/a".into()], deny: vec!["/b".into()] });
        let p: Policy = from_slice(br#"{"allow": ["/a"]}"#).unwrap();
        assert_eq!(p.allow, ["/a"]);
        // Escaped key text is matched too.
        let p: Policy = from_slice(br#"{"\u0041llow": ["/a"]}"#).unwrap();
        assert_eq!(p.allow, ["/a"]);
    }

    #[test]
    fn nested_structs_fold_but_map_keys_are_data() {
        let o: Outer = from_slice(
            br#"{"Inner": [{"ALLOW": ["/x"]}], "By_Name": {"Key": {"Deny": ["/y"]}}, "Maybe": {"aLLow": ["/z"]}}"#,
        )
        .unwrap();
        assert_eq!(o.inner[0].allow, ["/x"]);
        // The map's own key keeps its case; the struct inside folds.
        assert_eq!(o.by_name["Key"].deny, ["/y"]);
        assert_eq!(o.maybe.unwrap().allow, ["/z"]);
    }

    #[test]
    fn two_keys_for_one_field_are_refused() {
        let e = from_slice::<Policy>(br#"{"allow": ["/a"], "Allow": ["/b"]}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field"), "{e}");
        assert!(from_slice::<Policy>(br#"{"allow": [], "allow": []}"#).is_err());
    }

    #[test]
    fn trailing_data_and_malformed_json_are_refused() {
        assert!(from_slice::<Policy>(br#"{"allow": []} x"#).is_err());
        assert!(from_slice::<Policy>(br#"{"allow": ["#).is_err());
        assert!(from_slice::<Policy>(b"{} \n").is_ok());
    }
}
