//! Serde adapters shared by the serde-based codecs.
//!
//! An event enum is stored as its variant's *content*, with the variant's
//! name kept beside the payload as the event type (design rule 3). Serde's
//! externally tagged representation puts the name inside the payload, so:
//!
//! - [`Untagged`] wraps a format's serializer and serializes a top-level enum
//!   variant as its content only (a struct variant becomes a struct, a newtype
//!   variant its inner value, a unit variant a unit).
//! - [`Tagged`] wraps a format's deserializer and answers a top-level
//!   `deserialize_enum` by presenting the stored event type as the variant
//!   name and the payload as the variant's content.
//!
//! Neither builds an intermediate value: they only redirect serde's calls, so
//! the hot path costs what the format itself costs. Non-enum values (plain
//! struct events, snapshot states) pass straight through.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, VariantAccess, Visitor,
};
use serde::ser::{self, Serialize, Serializer};

/// A serializer that drops the variant tag of a top-level enum.
pub(crate) struct Untagged<S>(pub(crate) S);

/// `value` serialized through [`Untagged`]; lets APIs that take a
/// `Serialize` value (such as `ciborium::into_writer`) strip the tag too.
pub(crate) struct UntaggedValue<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for UntaggedValue<'_, T> {
    #[inline]
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Untagged(serializer))
    }
}

/// A tuple variant's fields serialized as a plain tuple.
pub(crate) struct TupleContent<T>(T);

impl<T: ser::SerializeTuple> ser::SerializeTupleVariant for TupleContent<T> {
    type Ok = T::Ok;
    type Error = T::Error;

    #[inline]
    fn serialize_field<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), T::Error> {
        self.0.serialize_element(value)
    }

    #[inline]
    fn end(self) -> Result<T::Ok, T::Error> {
        self.0.end()
    }
}

/// A struct variant's fields serialized as a plain struct.
pub(crate) struct StructContent<T>(T);

impl<T: ser::SerializeStruct> ser::SerializeStructVariant for StructContent<T> {
    type Ok = T::Ok;
    type Error = T::Error;

    #[inline]
    fn serialize_field<V: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &V,
    ) -> Result<(), T::Error> {
        self.0.serialize_field(key, value)
    }

    #[inline]
    fn skip_field(&mut self, key: &'static str) -> Result<(), T::Error> {
        self.0.skip_field(key)
    }

    #[inline]
    fn end(self) -> Result<T::Ok, T::Error> {
        self.0.end()
    }
}

/// Forwards `serialize_*` methods that take one value to the inner serializer.
macro_rules! forward_ser {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                self.0.$method(v)
            }
        )*
    };
}

impl<S: Serializer> Serializer for Untagged<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = S::SerializeSeq;
    type SerializeTuple = S::SerializeTuple;
    type SerializeTupleStruct = S::SerializeTupleStruct;
    type SerializeTupleVariant = TupleContent<S::SerializeTuple>;
    type SerializeMap = S::SerializeMap;
    type SerializeStruct = S::SerializeStruct;
    type SerializeStructVariant = StructContent<S::SerializeStruct>;

    forward_ser! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    }

    #[inline]
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(value)
    }

    #[inline]
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, value)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(self.0)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<S::SerializeSeq, S::Error> {
        self.0.serialize_seq(len)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<S::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len)
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<S::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0.serialize_tuple(len).map(TupleContent)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<S::SerializeMap, S::Error> {
        self.0.serialize_map(len)
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<S::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0.serialize_struct(name, len).map(StructContent)
    }

    #[inline]
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A deserializer that presents `event_type` as the variant of a top-level
/// enum and the wrapped deserializer as that variant's content.
///
/// When the variant name is not one of the enum's, `unknown` is set, so the
/// caller can report [`eskit_core::error::CodecError::UnknownEventType`] instead of a
/// format error.
pub(crate) struct Tagged<'a, D> {
    event_type: &'a str,
    inner: D,
    unknown: &'a Cell<bool>,
}

impl<'a, D> Tagged<'a, D> {
    #[inline]
    pub(crate) fn new(event_type: &'a str, inner: D, unknown: &'a Cell<bool>) -> Self {
        Self {
            event_type,
            inner,
            unknown,
        }
    }
}

/// Forwards `deserialize_*` methods that take only a visitor.
macro_rules! forward_de {
    ($($method:ident),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    forward_de! {
        deserialize_any, deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32,
        deserialize_i64, deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32,
        deserialize_u64, deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char,
        deserialize_str, deserialize_string, deserialize_bytes, deserialize_byte_buf,
        deserialize_option, deserialize_unit, deserialize_seq, deserialize_map,
        deserialize_identifier, deserialize_ignored_any,
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, visitor)
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, visitor)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_enum(Variant {
            name,
            event_type: self.event_type,
            inner: self.inner,
            unknown: self.unknown,
        })
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The enum access behind [`Tagged::deserialize_enum`]; also its variant access.
struct Variant<'a, D> {
    name: &'static str,
    event_type: &'a str,
    inner: D,
    unknown: &'a Cell<bool>,
}

impl<'de, D: Deserializer<'de>> EnumAccess<'de> for Variant<'_, D> {
    type Error = D::Error;
    type Variant = Content<D>;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Content<D>), D::Error> {
        let name = de::value::StrDeserializer::<D::Error>::new(self.event_type);
        match seed.deserialize(name) {
            Ok(v) => Ok((
                v,
                Content {
                    name: self.name,
                    inner: self.inner,
                },
            )),
            Err(e) => {
                self.unknown.set(true);
                Err(e)
            }
        }
    }
}

/// The variant's content: the whole payload.
pub(crate) struct Content<D> {
    name: &'static str,
    inner: D,
}

impl<'de, D: Deserializer<'de>> VariantAccess<'de> for Content<D> {
    type Error = D::Error;

    /// A unit variant's content is any well-formed value (usually null):
    /// writers in other languages often store `{}` for a field-less event.
    #[inline]
    fn unit_variant(self) -> Result<(), D::Error> {
        de::Deserialize::deserialize(self.inner).map(|IgnoredAny| ())
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, D::Error> {
        seed.deserialize(self.inner)
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(self.name, fields, visitor)
    }
}
