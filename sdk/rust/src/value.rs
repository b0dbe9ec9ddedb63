//! One module: the dynamic value, its strict decoder and its serde impls are one type's
//! implementation (over 500 lines for that reason).
//!
//! A dynamic MessagePack value restricted to the protocol's plain data (nil, booleans,
//! integers, floats, UTF-8 strings, binary, arrays and maps with string keys), with a strict
//! decoder and serde conversions to and from typed Rust values.

use std::collections::HashSet;
use std::fmt;
use std::ops::Index;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `max_depth` (docs/protocol.md section 3.1): containers (arrays, maps) on the path to the
/// deepest value, the body's own map included. Deeper bodies are refused, as the host does.
pub const MAX_DEPTH: usize = 72;
/// `max_values`: values in one body (every nil, boolean, number, string, binary, array, map
/// and map key). An array or map header announcing more than what is left is refused at once.
pub const MAX_VALUES: usize = 65_536;
/// `max_string_bytes`: UTF-8 bytes of one string, map keys included.
pub const MAX_STRING_BYTES: usize = 16 * 1024 * 1024;
/// `max_total_string_bytes`: UTF-8 bytes of all strings in one body a module sends (map keys
/// included). The host refuses more: every string costs its shared event loop far more than
/// binary does. Large data (a block, a transaction, a file) travels as binary ([`Bytes`]). The
/// host's own messages are not bound by it (they may carry the hex of transactions it holds;
/// a block's raw bytes come as binary, read into hex by [`hex_from_bin`]), so the decoder does
/// not check it; the encoder does ([`crate::protocol::encode_body`]).
pub const MAX_TOTAL_STRING_BYTES: usize = 1024 * 1024;
/// `max_binary_bytes`: bytes of one binary value.
pub const MAX_BINARY_BYTES: usize = 16 * 1024 * 1024;
/// `max_map_keys`: distinct map keys in one body. A key of at most [`SHORT_KEY_BYTES`] bytes
/// counts once however often it appears (in any map of the body); a longer key counts at every
/// appearance.
pub const MAX_MAP_KEYS: usize = 4096;
/// Map keys up to this many UTF-8 bytes count once per body towards [`MAX_MAP_KEYS`].
pub const SHORT_KEY_BYTES: usize = 64;

/// Plain data as it travels on the wire.
///
/// Integers: the decoder produces [`Value::UInt`] for every integer >= 0 and [`Value::Int`]
/// only for negative ones, whatever MessagePack format carried them; equality compares
/// integers by value, so `Int(5) == UInt(5)`. Maps keep their key order.
#[derive(Debug, Clone, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
}

static NIL: Value = Value::Nil;

impl Value {
    /// An empty map.
    pub fn map() -> Value {
        Value::Map(Vec::new())
    }

    /// A map from `(key, value)` pairs: `Value::from_pairs([("status", "ok".into())])`.
    pub fn from_pairs<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Sets `key` in a map (replacing an existing entry); turns Nil into a map first.
    /// Does nothing on other kinds of value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        if self.is_nil() {
            *self = Value::map();
        }
        if let Value::Map(entries) = self {
            let key = key.into();
            let value = value.into();
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
    }

    /// The value under `key` when this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer as u64 when it is one and is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::UInt(n) => Some(*n),
            Value::Int(n) if *n >= 0 => Some(*n as u64),
            _ => None,
        }
    }

    /// The integer as i64 when it is one and fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::UInt(n) if *n <= i64::MAX as u64 => Some(*n as i64),
            _ => None,
        }
    }

    /// Any number as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(f) => Some(*f),
            Value::Int(n) => Some(*n as f64),
            Value::UInt(n) => Some(*n as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Converts this value into a typed one (like `serde_json::from_value`).
    pub fn deserialize_into<T: DeserializeOwned>(self) -> Result<T, ValueError> {
        T::deserialize(self)
    }

    /// The name of this kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::F64(_) => "float",
            Value::Str(_) => "string",
            Value::Bin(_) => "binary",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Int(a), UInt(b)) | (UInt(b), Int(a)) => *a >= 0 && *a as u64 == *b,
            (F64(a), F64(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bin(a), Bin(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

/// `value["key"]`: the entry of a map, or Nil when absent (never panics).
impl Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NIL)
    }
}

/// `value[i]`: an element of an array, or Nil when absent (never panics).
impl Index<usize> for Value {
    type Output = Value;
    fn index(&self, i: usize) -> &Value {
        match self {
            Value::Array(a) => a.get(i).unwrap_or(&NIL),
            _ => &NIL,
        }
    }
}

impl fmt::Display for Value {
    /// A compact JSON-like rendering (binary as `<hex>`), for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::UInt(n) => write!(f, "{n}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bin(b) => {
                f.write_str("<")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str(">")
            }
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k:?}:{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

macro_rules! from_uint {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value { Value::UInt(n as u64) }
        }
    )*};
}
macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                if n >= 0 { Value::UInt(n as u64) } else { Value::Int(n as i64) }
            }
        }
    )*};
}
from_uint!(u8, u16, u32, u64, usize);
from_int!(i8, i16, i32, i64, isize);

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::F64(x)
    }
}
impl From<f32> for Value {
    fn from(x: f32) -> Value {
        Value::F64(x as f64)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<Vec<u8>> for Value {
    /// Bytes become MessagePack binary.
    fn from(b: Vec<u8>) -> Value {
        Value::Bin(b)
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Value {
        Value::Bin(b.0)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Value {
        Value::Array(a)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Value {
        o.map_or(Value::Nil, Into::into)
    }
}

// ---- serde: Serialize / Deserialize ----

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::UInt(n) => s.serialize_u64(*n),
            Value::F64(x) => s.serialize_f64(*x),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plain data (nil, boolean, number, string, binary, array or map with string keys)")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::UInt(n))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(Value::F64(x))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(b))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

// ---- Value as a serde Deserializer (typed results from dynamic values) ----

/// A conversion between [`Value`] and a typed value failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ValueError {}
impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}
impl serde::ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

impl<'de> Deserializer<'de> for Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Nil => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(n) => visitor.visit_i64(n),
            Value::UInt(n) => visitor.visit_u64(n),
            Value::F64(x) => visitor.visit_f64(x),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bin(b) => visitor.visit_byte_buf(b),
            Value::Array(a) => {
                let mut seq = de::value::SeqDeserializer::new(a.into_iter());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Map(m) => {
                let mut map = de::value::MapDeserializer::new(m.into_iter());
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Nil => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            // "variant"
            Value::Str(s) => visitor.visit_enum(s.into_deserializer()),
            // {"variant": content}
            Value::Map(mut m) if m.len() == 1 => {
                let (variant, content) = m.pop().expect("one entry");
                visitor.visit_enum(EnumDeserializer { variant, content })
            }
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a string or a map with one entry (an enum)",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.integral().deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

impl Value {
    /// For a typed integer: a float with an exact integral value (which a JavaScript peer may
    /// send for a large number, against the spec's advice) is read as that integer.
    fn integral(self) -> Value {
        match self {
            Value::F64(x) if x.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&x) => {
                Value::UInt(x as u64)
            }
            Value::F64(x) if x.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&x) => {
                Value::Int(x as i64)
            }
            other => other,
        }
    }
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Nil => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(n) => de::Unexpected::Signed(*n),
        Value::UInt(n) => de::Unexpected::Unsigned(*n),
        Value::F64(x) => de::Unexpected::Float(*x),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Bin(b) => de::Unexpected::Bytes(b),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

struct EnumDeserializer {
    variant: String,
    content: Value,
}

impl<'de> de::EnumAccess<'de> for EnumDeserializer {
    type Error = ValueError;
    type Variant = Value;
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Value), ValueError> {
        let variant = seed.deserialize(IntoDeserializer::<ValueError>::into_deserializer(self.variant))?;
        Ok((variant, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = ValueError;
    fn unit_variant(self) -> Result<(), ValueError> {
        match self {
            Value::Nil => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(&other), &"unit variant")),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ValueError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }
}

/// Converts a dynamic value into a typed one.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ValueError> {
    T::deserialize(value)
}

/// Converts any serialisable value into a dynamic one (structs become maps keyed by field
/// name, byte buffers marked as bytes become binary).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| ValueError(e.to_string()))?;
    decode_value(&bytes).map_err(|e| ValueError(e.to_string()))
}

// ---- Bytes: binary that serialises as MessagePack bin ----

/// A byte buffer that serialises as MessagePack binary (a plain `Vec<u8>` would become an
/// array of integers). Use it for binary storage values and fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(b: Vec<u8>) -> Bytes {
        Bytes(b)
    }
}
impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Bytes {
        Bytes(b.to_vec())
    }
}
impl std::ops::Deref for Bytes {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("binary")
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(b.to_vec()))
            }
            fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(b))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

// ---- raw serialisations: binary on the wire, hex in the typed results ----

/// Reads a raw serialisation field (a block's or a transaction's `hex`): the host sends its
/// bytes as binary and this makes their lowercase hex (docs/protocol.md 6.3); a host or
/// backend that sends the hex string is taken as it is.
pub fn hex_from_bin<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("raw bytes (binary) or their hex (a string)")
        }
        fn visit_bytes<E>(self, b: &[u8]) -> Result<String, E> {
            Ok(to_hex(b))
        }
        fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<String, E> {
            Ok(to_hex(&b))
        }
        fn visit_str<E>(self, s: &str) -> Result<String, E> {
            Ok(s.to_owned())
        }
        fn visit_string<E>(self, s: String) -> Result<String, E> {
            Ok(s)
        }
    }
    d.deserialize_any(V)
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

// ---- the strict decoder ----

/// A frame body that is not one well-formed MessagePack value of plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the body where decoding failed.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MessagePack at byte {}: {}", self.offset, self.message)
    }
}
impl std::error::Error for DecodeError {}

/// Decodes exactly one MessagePack value of plain data from `bytes`, accepting exactly what
/// the host accepts (docs/protocol.md sections 3 and 3.1). Extension types, the reserved byte
/// 0xc1, strings that are not UTF-8, map keys that are not strings, the map key `__proto__`,
/// trailing bytes, and bodies over the protocol limits ([`MAX_DEPTH`], [`MAX_VALUES`],
/// [`MAX_STRING_BYTES`], [`MAX_BINARY_BYTES`], [`MAX_MAP_KEYS`]) are errors; each limit is checked from the
/// header, before anything it announces is allocated or read.
pub fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        budget: MAX_VALUES,
        at: 0,
        keys: HashSet::new(),
        long_keys: 0,
    };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(r.err(format!("{} trailing bytes after the value", bytes.len() - r.pos)));
    }
    Ok(v)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Values still allowed in this body (max_values).
    budget: usize,
    /// Offset of the header being read (where a refused container starts).
    at: usize,
    /// The distinct short map keys seen so far (max_map_keys).
    keys: HashSet<&'a [u8]>,
    /// Map keys longer than SHORT_KEY_BYTES seen so far, each appearance counted.
    long_keys: usize,
}

fn over_limit(what: String, limit: &str, value: usize) -> String {
    format!("{what}: over the protocol limit {limit} = {value} (docs/protocol.md, section 3)")
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "truncated: needs {n} more bytes, {} left",
                self.buf.len() - self.pos
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    /// One value, inside `depth` containers.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let start = self.pos;
        if self.budget == 0 {
            return Err(self.err(over_limit(
                "too many values in one body".into(),
                "max_values",
                MAX_VALUES,
            )));
        }
        self.budget -= 1;
        self.at = start;
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => Value::UInt(m as u64),
            0x80..=0x8f => self.map((m & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((m & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.string((m & 0x1f) as usize, start)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.uint(1)? as usize;
                self.binary(n, start)?
            }
            0xc5 => {
                let n = self.uint(2)? as usize;
                self.binary(n, start)?
            }
            0xc6 => {
                let n = self.uint(4)? as usize;
                self.binary(n, start)?
            }
            0xca => Value::F64(f32::from_bits(self.uint(4)? as u32) as f64),
            0xcb => Value::F64(f64::from_bits(self.uint(8)?)),
            0xcc => Value::UInt(self.uint(1)?),
            0xcd => Value::UInt(self.uint(2)?),
            0xce => Value::UInt(self.uint(4)?),
            0xcf => Value::UInt(self.uint(8)?),
            0xd0 => Value::from(self.uint(1)? as u8 as i8),
            0xd1 => Value::from(self.uint(2)? as u16 as i16),
            0xd2 => Value::from(self.uint(4)? as u32 as i32),
            0xd3 => Value::from(self.uint(8)? as i64),
            0xd9 => {
                let n = self.uint(1)? as usize;
                self.string(n, start)?
            }
            0xda => {
                let n = self.uint(2)? as usize;
                self.string(n, start)?
            }
            0xdb => {
                let n = self.uint(4)? as usize;
                self.string(n, start)?
            }
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(m as i8 as i64),
            0xc1 => {
                self.pos = start;
                return Err(self.err("the reserved byte 0xc1 is not valid MessagePack"));
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.pos = start;
                return Err(self.err("MessagePack extension types are not plain data"));
            }
        })
    }

    fn binary(&mut self, n: usize, at: usize) -> Result<Value, DecodeError> {
        if n > MAX_BINARY_BYTES {
            self.pos = at;
            return Err(self.err(over_limit(
                format!("binary of {n} bytes"),
                "max_binary_bytes",
                MAX_BINARY_BYTES,
            )));
        }
        Ok(Value::Bin(self.take(n)?.to_vec()))
    }

    fn string(&mut self, n: usize, at: usize) -> Result<Value, DecodeError> {
        if n > MAX_STRING_BYTES {
            self.pos = at;
            return Err(self.err(over_limit(
                format!("string of {n} bytes"),
                "max_string_bytes",
                MAX_STRING_BYTES,
            )));
        }
        let start = self.pos;
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(e) => {
                self.pos = start;
                Err(self.err(format!("string is not UTF-8: {e}")))
            }
        }
    }

    /// Checks a container header (at `at`, announcing `items` values) against max_depth and
    /// max_values before anything it announces is read.
    fn container(&mut self, items: usize, depth: usize, what: String) -> Result<(), DecodeError> {
        let at = self.at;
        let fail = |message: String| Err(DecodeError { offset: at, message });
        if depth + 1 > MAX_DEPTH {
            return fail(over_limit("value nested too deeply".into(), "max_depth", MAX_DEPTH));
        }
        if items > self.budget {
            return fail(over_limit(what, "max_values", MAX_VALUES));
        }
        // Every item takes at least one byte: never trust a count beyond what is left.
        if items > self.buf.len() - self.pos {
            return fail(format!(
                "truncated: {what} in {} remaining bytes",
                self.buf.len() - self.pos
            ));
        }
        Ok(())
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        self.container(n, depth, format!("array of {n} elements"))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(out))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        self.container(n.saturating_mul(2), depth, format!("map of {n} entries"))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key_at = self.pos;
            let key = match self.value(depth + 1)? {
                Value::Str(s) if s == "__proto__" => {
                    self.pos = key_at;
                    return Err(self.err("the map key \"__proto__\" is not allowed (the host refuses it: JavaScript would take it for the prototype); rename it"));
                }
                Value::Str(s) => {
                    let bytes = &self.buf[self.pos - s.len()..self.pos];
                    if bytes.len() > SHORT_KEY_BYTES {
                        self.long_keys += 1;
                    } else {
                        self.keys.insert(bytes);
                    }
                    if self.keys.len() + self.long_keys > MAX_MAP_KEYS {
                        self.pos = key_at;
                        return Err(self.err(over_limit(
                            "too many distinct map keys in one body (a map keyed by data, such as ids or hashes, belongs in an array of [key, value] pairs, or split across messages)".into(),
                            "max_map_keys",
                            MAX_MAP_KEYS,
                        )));
                    }
                    s
                }
                other => {
                    self.pos = key_at;
                    return Err(self.err(format!("map key is a {}; only string keys are allowed", other.kind())));
                }
            };
            let v = self.value(depth + 1)?;
            out.push((key, v));
        }
        Ok(Value::Map(out))
    }
}

/// The UTF-8 bytes of all strings (map keys included) in a body this SDK encoded, read from
/// its MessagePack headers; `None` for bytes that are not one well-formed value.
pub fn total_string_bytes(body: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending = 1usize;
    let mut total = 0usize;
    let be = |at: usize, n: usize| -> Option<usize> {
        let b = body.get(at..at + n)?;
        Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
    };
    while pending > 0 {
        pending -= 1;
        let m = *body.get(pos)?;
        pos += 1;
        let (skip, strlen, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * (m & 0x0f) as usize),
            0x90..=0x9f => (0, 0, (m & 0x0f) as usize),
            0xa0..=0xbf => (0, (m & 0x1f) as usize, 0),
            0xc4 => (1 + be(pos, 1)?, 0, 0),
            0xc5 => (2 + be(pos, 2)?, 0, 0),
            0xc6 => (4 + be(pos, 4)?, 0, 0),
            0xca => (4, 0, 0),
            0xcb => (8, 0, 0),
            0xcc | 0xd0 => (1, 0, 0),
            0xcd | 0xd1 => (2, 0, 0),
            0xce | 0xd2 => (4, 0, 0),
            0xcf | 0xd3 => (8, 0, 0),
            0xd9 => (1, be(pos, 1)?, 0),
            0xda => (2, be(pos, 2)?, 0),
            0xdb => (4, be(pos, 4)?, 0),
            0xdc => (2, 0, be(pos, 2)?),
            0xdd => (4, 0, be(pos, 4)?),
            0xde => (2, 0, 2 * be(pos, 2)?),
            0xdf => (4, 0, 2 * be(pos, 4)?),
            _ => return None,
        };
        pos = pos.checked_add(skip)?.checked_add(strlen)?;
        if pos > body.len() || items > body.len() - pos {
            return None;
        }
        total += strlen;
        pending += items;
    }
    Some(total)
}
