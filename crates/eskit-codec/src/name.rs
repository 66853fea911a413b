//! Event type names taken from serde: the variant name of an enum (honouring
//! `#[serde(rename)]`), or the name of a struct.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};

/// The serde name of `value`: the variant's name for an externally tagged
/// enum (after `#[serde(rename)]`), the type's name for a struct, unit struct
/// or newtype struct. `None` for anything else (numbers, strings, sequences,
/// maps, internally tagged or untagged enums).
///
/// It runs `value`'s `Serialize` impl against a serializer that stops at the
/// first call carrying a name, so it costs a few nanoseconds, never allocates
/// and never serializes the fields.
///
/// ```
/// #[derive(serde::Serialize)]
/// enum Account {
///     Opened { owner: String },
///     #[serde(rename = "AccountClosed")]
///     Closed,
/// }
/// #[derive(serde::Serialize)]
/// struct Pinged { at: u64 }
///
/// let opened = Account::Opened { owner: "ada".into() };
/// assert_eq!(eskit_codec::event_type_of(&opened), Some("Opened"));
/// assert_eq!(eskit_codec::event_type_of(&Account::Closed), Some("AccountClosed"));
/// assert_eq!(eskit_codec::event_type_of(&Pinged { at: 1 }), Some("Pinged"));
/// assert_eq!(eskit_codec::event_type_of(&7_u8), None);
/// ```
pub fn event_type_of<T: Serialize + ?Sized>(value: &T) -> Option<&'static str> {
    match value.serialize(NameOf) {
        Ok(name) => name,
        Err(Found(name)) => name,
    }
}

/// Every serde name a value of `T` can carry, without a value: the variant
/// names of an externally tagged enum (after `#[serde(rename)]`), or the
/// one name of a struct, unit struct or newtype struct. Empty for anything
/// serde gives no name (see [`event_type_of`]).
///
/// It runs `T`'s `Deserialize` impl against a deserializer that stops at the
/// first call naming the type, so no input is read.
///
/// ```
/// #[derive(serde::Deserialize)]
/// enum Account {
///     Opened { owner: String },
///     #[serde(rename = "AccountClosed")]
///     Closed,
/// }
/// #[derive(serde::Deserialize)]
/// struct Pinged { at: u64 }
///
/// assert_eq!(&*eskit_codec::event_types_of::<Account>(), ["Opened", "AccountClosed"]);
/// assert_eq!(&*eskit_codec::event_types_of::<Pinged>(), ["Pinged"]);
/// assert!(eskit_codec::event_types_of::<u8>().is_empty());
/// ```
pub fn event_types_of<T: DeserializeOwned>() -> Cow<'static, [&'static str]> {
    match T::deserialize(NamesOf) {
        Ok(_) | Err(Named::Nothing) => Cow::Borrowed(&[]),
        Err(Named::Variants(v)) => Cow::Borrowed(v),
        Err(Named::One(n)) => Cow::Owned(vec![n]),
    }
}

/// Implements [`eskit_core::typed::DomainEvent`] for serde types through
/// [`event_type_of`] and [`event_types_of`]: the event type is the serde
/// variant name of an enum, or the serde name of a struct. Types serde gives
/// no name fall back to the last segment of the Rust type name. The type
/// must implement `Serialize` and `DeserializeOwned`.
///
/// ```
/// use eskit_core::typed::DomainEvent;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Account { Opened { owner: String }, Closed }
/// eskit_codec::serde_domain_event!(Account);
///
/// assert_eq!(Account::Closed.event_type(), "Closed");
/// assert_eq!(Account::event_types(), ["Opened", "Closed"]);
/// ```
#[macro_export]
macro_rules! serde_domain_event {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl $crate::eskit_core::typed::DomainEvent for $ty {
                fn event_type(&self) -> &'static str {
                    $crate::event_type_of(self)
                        .unwrap_or_else($crate::eskit_core::typed::derive_type_name::<$ty>)
                }

                fn event_types() -> &'static [&'static str] {
                    static NAMES: ::std::sync::OnceLock<&'static [&'static str]> =
                        ::std::sync::OnceLock::new();
                    NAMES.get_or_init(|| {
                        let names = $crate::event_types_of::<$ty>();
                        match names {
                            ::std::borrow::Cow::Borrowed(v) if !v.is_empty() => v,
                            ::std::borrow::Cow::Owned(v) if !v.is_empty() => v.leak(),
                            // Once per type: the fallback name, as `event_type`.
                            _ => ::std::vec![$crate::eskit_core::typed::derive_type_name::<$ty>()].leak(),
                        }
                    })
                }
            }
        )+
    };
}

/// Ends deserialization early, carrying the names found.
#[derive(Debug)]
enum Named {
    Nothing,
    Variants(&'static [&'static str]),
    One(&'static str),
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("event type names captured")
    }
}

impl std::error::Error for Named {}

impl de::Error for Named {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self::Nothing
    }
}

/// A deserializer that only reports the names serde hands it.
struct NamesOf;

impl<'de> Deserializer<'de> for NamesOf {
    type Error = Named;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Named> {
        Err(Named::Nothing)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Named> {
        Err(Named::Variants(variants))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Named> {
        Err(Named::One(name))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Named> {
        Err(Named::One(name))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Named> {
        Err(Named::One(name))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Named> {
        Err(Named::One(name))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit seq tuple map identifier ignored_any
    }
}

/// Ends serialization early, carrying the name found (if any).
#[derive(Debug)]
struct Found(Option<&'static str>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("event type name captured")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self(None)
    }
}

/// A serializer that only reports the first name serde hands it.
struct NameOf;

type Nameless = Impossible<Option<&'static str>, Found>;

macro_rules! nameless {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, _v: $ty) -> Result<Option<&'static str>, Found> {
                Ok(None)
            }
        )*
    };
}

impl Serializer for NameOf {
    type Ok = Option<&'static str>;
    type Error = Found;
    type SerializeSeq = Nameless;
    type SerializeTuple = Nameless;
    type SerializeTupleStruct = Nameless;
    type SerializeTupleVariant = Nameless;
    type SerializeMap = Nameless;
    type SerializeStruct = Nameless;
    type SerializeStructVariant = Nameless;

    nameless! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
    }

    fn serialize_none(self) -> Result<Self::Ok, Found> {
        Ok(None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<Self::Ok, Found> {
        Ok(None)
    }

    fn serialize_unit(self) -> Result<Self::Ok, Found> {
        Ok(None)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<Self::Ok, Found> {
        Ok(Some(name))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, Found> {
        Ok(Some(variant))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _value: &T,
    ) -> Result<Self::Ok, Found> {
        Ok(Some(name))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<Self::Ok, Found> {
        Ok(Some(variant))
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Nameless, Found> {
        Err(Found(None))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Nameless, Found> {
        Err(Found(None))
    }

    fn serialize_tuple_struct(self, name: &'static str, _len: usize) -> Result<Nameless, Found> {
        Err(Found(Some(name)))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Nameless, Found> {
        Err(Found(Some(variant)))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Nameless, Found> {
        Err(Found(None))
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Nameless, Found> {
        Err(Found(Some(name)))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Nameless, Found> {
        Err(Found(Some(variant)))
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, _value: &T) -> Result<Self::Ok, Found> {
        Ok(None)
    }
}
