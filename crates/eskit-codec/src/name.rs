//! Event type names taken from serde: the variant name of an enum (honouring
//! `#[serde(rename)]`), or the name of a struct.

use std::fmt;

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

/// Implements [`eskit_core::DomainEvent`] for serde types through
/// [`event_type_of`]: the event type is the serde variant name of an enum, or
/// the serde name of a struct. Types serde gives no name fall back to the
/// last segment of the Rust type name.
///
/// ```
/// use eskit_core::DomainEvent;
///
/// #[derive(serde::Serialize)]
/// enum Account { Opened { owner: String }, Closed }
/// eskit_codec::serde_domain_event!(Account);
///
/// assert_eq!(Account::Closed.event_type(), "Closed");
/// ```
#[macro_export]
macro_rules! serde_domain_event {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl $crate::eskit_core::DomainEvent for $ty {
                fn event_type(&self) -> &'static str {
                    $crate::event_type_of(self)
                        .unwrap_or_else($crate::eskit_core::derive_type_name::<$ty>)
                }
            }
        )+
    };
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
