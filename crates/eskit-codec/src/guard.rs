//! A serializer wrapper that refuses, while encoding, every value its format
//! would write but the codec's decoder could not read back as it was.
//!
//! [`Guard`] wraps a format's serializer and forwards every call, checking
//! on the way:
//!
//! - floats the format cannot spell (JSON has no NaN or infinity: serde_json
//!   writes `null`, which then fails to decode as a float);
//! - nesting past [`MAX_DEPTH`], counted the way the codec's decoder counts
//!   it, so that exactly what the decoder would refuse is refused;
//! - `Some` of a value stored as null (`Some(None)`, `Some(())`): both
//!   formats write it as null, which reads back as `None`.
//!
//! Nothing is buffered and no intermediate value is built: a check costs a
//! compare, and children are reached through [`Checked`], which wraps each
//! field, element, key and value before the format sees it. Where the
//! refusal happened is only worked out on the way back out of a failed
//! encode, so a successful encode pays for it no more than an element count
//! per sequence.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::ser::{self, Impossible, Serialize, Serializer};

use crate::error::EncodeError;
use crate::limits::MAX_DEPTH;

/// What a format's decoder accepts, as far as the guard must know.
pub(crate) trait Rules: 'static {
    /// The format cannot write NaN or infinities.
    const REFUSE_NON_FINITE: bool;

    /// Levels a unit variant adds (it is a plain string in JSON, but
    /// ciborium's decoder counts every enum as a level).
    const UNIT_VARIANT_LEVELS: u32;

    /// Levels a tuple variant named `name` adds around its fields.
    fn tuple_variant_levels(name: &str) -> u32;
}

/// The JSON codec's rules: no non-finite floats; depth is bracket depth.
#[cfg(feature = "json")]
pub(crate) enum Json {}

#[cfg(feature = "json")]
impl Rules for Json {
    const REFUSE_NON_FINITE: bool = true;
    const UNIT_VARIANT_LEVELS: u32 = 0;

    #[inline]
    fn tuple_variant_levels(_name: &str) -> u32 {
        // `{"Variant":[..]}`
        2
    }
}

/// The CBOR codec's rules: every float is fine; depth is ciborium's
/// recursion count, in which each array, map and enum is one level.
#[cfg(feature = "cbor")]
pub(crate) enum Cbor {}

#[cfg(feature = "cbor")]
impl Rules for Cbor {
    const REFUSE_NON_FINITE: bool = false;
    const UNIT_VARIANT_LEVELS: u32 = 1;

    #[inline]
    fn tuple_variant_levels(name: &str) -> u32 {
        // ciborium writes its tag types (`ciborium::tag::*`) as a tuple
        // variant of this name and reads them back as one enum level;
        // any other tuple variant is an enum level around an array.
        if name == "@@TAG@@" { 1 } else { 2 }
    }
}

/// Why and where the guard refused a value: filled in on refusal, and
/// completed with the path while the error travels back up.
#[derive(Debug)]
pub(crate) struct Refused {
    kind: Kind,
    /// Innermost segment first.
    path: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    NonFinite(f64),
    TooDeep,
    NullInSome,
}

#[derive(Debug)]
enum Segment {
    Field(&'static str),
    Variant(&'static str),
    Index(usize),
    /// A map key as rendered by [`KeyName`]; `None` when it could not be.
    Key(Option<String>),
}

impl Refused {
    fn into_error(self) -> EncodeError {
        let path = render_path(&self.path);
        match self.kind {
            Kind::NonFinite(value) => EncodeError::NonFiniteFloat { value, path },
            Kind::TooDeep => EncodeError::TooDeep {
                max: MAX_DEPTH,
                path: Some(path),
            },
            Kind::NullInSome => EncodeError::NullInSome { path },
        }
    }
}

/// Where a refusal is recorded: one per encode, on its stack.
pub(crate) type Refusal = Cell<Option<Refused>>;

/// Runs `encode`, which serializes `Checked::root(value, refusal)`, and
/// reports its failure: the guard's refusal if it refused, else what the
/// format reported.
#[inline(always)]
pub(crate) fn run<E>(
    encode: impl FnOnce(&Refusal) -> Result<(), E>,
) -> Result<(), eskit_core::error::BoxError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let refusal = Cell::new(None);
    encode(&refusal).map_err(|e| match refusal.into_inner() {
        Some(refused) => Box::new(refused.into_error()) as eskit_core::error::BoxError,
        None => Box::new(e),
    })
}

/// `$`, then `.field`, `[3]` or `["key"]` per level, outermost first.
fn render_path(path: &[Segment]) -> String {
    use fmt::Write as _;
    let mut out = String::from("$");
    for segment in path.iter().rev() {
        // Writing to a `String` cannot fail.
        let _ = match segment {
            Segment::Field(name) | Segment::Variant(name) => write!(out, ".{name}"),
            Segment::Index(i) => write!(out, "[{i}]"),
            Segment::Key(Some(key)) => write!(out, "[{key}]"),
            Segment::Key(None) => write!(out, "[?]"),
        };
    }
    out
}

/// Where the guard stands: the depth reached, whether the value is the
/// content of a `Some`, and where to record a refusal. Copied into every
/// child; two machine words.
#[derive(Clone, Copy)]
struct Ctx<'r> {
    depth: u32,
    in_some: bool,
    refusal: &'r Refusal,
}

/// Depths are stored in a `u32`, and never pass `MAX_DEPTH + 2`.
const _: () = assert!(MAX_DEPTH < u32::MAX as usize - 2);

impl Ctx<'_> {
    /// Records a refusal and returns the error that unwinds the format's
    /// serializer.
    #[cold]
    fn refuse<E: ser::Error>(self, kind: Kind) -> E {
        let message = match kind {
            Kind::NonFinite(_) => "non-finite float refused",
            Kind::TooDeep => "value nests too deep to be read back",
            Kind::NullInSome => "`Some` of a null value refused",
        };
        self.refusal.set(Some(Refused {
            kind,
            path: Vec::new(),
        }));
        E::custom(message)
    }

    /// Adds the segment a failure is travelling through to the path of the
    /// refusal, if the guard refused.
    #[cold]
    fn note(self, segment: impl FnOnce() -> Segment) {
        let mut refused = self.refusal.take();
        if let Some(refused) = refused.as_mut() {
            refused.path.push(segment());
        }
        self.refusal.set(refused);
    }

    /// The context of a child `levels` deeper, or a refusal.
    #[inline]
    fn enter<E: ser::Error>(self, levels: u32) -> Result<Self, E> {
        let depth = self.depth + levels;
        if depth as usize > MAX_DEPTH {
            return Err(self.refuse(Kind::TooDeep));
        }
        Ok(Self {
            depth,
            in_some: false,
            refusal: self.refusal,
        })
    }
}

/// A value serialized through a [`Guard`].
pub(crate) struct Checked<'a, 'r, T: ?Sized, R> {
    value: &'a T,
    ctx: Ctx<'r>,
    rules: PhantomData<R>,
}

impl<'a, 'r, T: ?Sized, R> Checked<'a, 'r, T, R> {
    /// `value` as a top-level value, encoded inside [`run`].
    #[inline]
    pub(crate) fn root(value: &'a T, refusal: &'r Refusal) -> Self {
        Self::new(
            value,
            Ctx {
                depth: 0,
                in_some: false,
                refusal,
            },
        )
    }

    #[inline]
    fn new(value: &'a T, ctx: Ctx<'r>) -> Self {
        Self {
            value,
            ctx,
            rules: PhantomData,
        }
    }
}

impl<T: Serialize + ?Sized, R: Rules> Serialize for Checked<'_, '_, T, R> {
    #[inline(always)]
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Guard::<S, R> {
            inner: serializer,
            ctx: self.ctx,
            rules: PhantomData,
        })
    }
}

/// The checking serializer around a format's serializer `S`.
pub(crate) struct Guard<'r, S, R> {
    inner: S,
    ctx: Ctx<'r>,
    rules: PhantomData<R>,
}

/// Forwards `serialize_*` methods whose values cannot be refused.
macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'r, S: Serializer, R: Rules> Serializer for Guard<'r, S, R> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'r, S::SerializeSeq, R>;
    type SerializeTuple = Compound<'r, S::SerializeTuple, R>;
    type SerializeTupleStruct = Compound<'r, S::SerializeTupleStruct, R>;
    type SerializeTupleVariant = Variant<'r, S::SerializeTupleVariant, R>;
    type SerializeMap = Compound<'r, S::SerializeMap, R>;
    type SerializeStruct = Compound<'r, S::SerializeStruct, R>;
    type SerializeStructVariant = Variant<'r, S::SerializeStructVariant, R>;

    forward! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_char(char),
        serialize_str(&str), serialize_bytes(&[u8]),
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if R::REFUSE_NON_FINITE && !v.is_finite() {
            return Err(self.ctx.refuse(Kind::NonFinite(f64::from(v))));
        }
        self.inner.serialize_f32(v)
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if R::REFUSE_NON_FINITE && !v.is_finite() {
            return Err(self.ctx.refuse(Kind::NonFinite(v)));
        }
        self.inner.serialize_f64(v)
    }

    #[inline]
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        if self.ctx.in_some {
            return Err(self.ctx.refuse(Kind::NullInSome));
        }
        self.inner.serialize_none()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let ctx = Ctx {
            in_some: true,
            ..self.ctx
        };
        self.inner.serialize_some(&Checked::<T, R>::new(value, ctx))
    }

    #[inline]
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        if self.ctx.in_some {
            return Err(self.ctx.refuse(Kind::NullInSome));
        }
        self.inner.serialize_unit()
    }

    #[inline]
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        if self.ctx.in_some {
            return Err(self.ctx.refuse(Kind::NullInSome));
        }
        self.inner.serialize_unit_struct(name)
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.ctx.enter::<S::Error>(R::UNIT_VARIANT_LEVELS)?;
        self.inner.serialize_unit_variant(name, index, variant)
    }

    /// A newtype struct is transparent: its content takes its place, also
    /// as the content of a `Some`.
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_struct(name, &Checked::<T, R>::new(value, self.ctx))
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        let result = self.inner.serialize_newtype_variant(
            name,
            index,
            variant,
            &Checked::<T, R>::new(value, ctx),
        );
        if result.is_err() {
            ctx.note(|| Segment::Variant(variant));
        }
        result
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        self.inner
            .serialize_seq(len)
            .map(|inner| Compound::new(inner, ctx))
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        self.inner
            .serialize_tuple(len)
            .map(|inner| Compound::new(inner, ctx))
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        self.inner
            .serialize_tuple_struct(name, len)
            .map(|inner| Compound::new(inner, ctx))
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(R::tuple_variant_levels(name))?;
        self.inner
            .serialize_tuple_variant(name, index, variant, len)
            .map(|inner| Variant {
                fields: Compound::new(inner, ctx),
                variant,
            })
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        self.inner
            .serialize_map(len)
            .map(|inner| Compound::new(inner, ctx))
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let ctx = self.ctx.enter::<S::Error>(1)?;
        self.inner
            .serialize_struct(name, len)
            .map(|inner| Compound::new(inner, ctx))
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        // `{"Variant":{..}}` in JSON; an enum level around a map in CBOR.
        let ctx = self.ctx.enter::<S::Error>(2)?;
        self.inner
            .serialize_struct_variant(name, index, variant, len)
            .map(|inner| Variant {
                fields: Compound::new(inner, ctx),
                variant,
            })
    }

    #[inline]
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The guard's side of a sequence, tuple, map or struct: every child goes
/// through [`Checked`] one level deeper.
pub(crate) struct Compound<'r, C, R> {
    inner: C,
    /// The children's context.
    ctx: Ctx<'r>,
    /// The next element's index, for the path of a refusal.
    index: usize,
    rules: PhantomData<R>,
}

/// A tuple or struct variant's fields, which also name the variant in the
/// path of a refusal.
pub(crate) struct Variant<'r, C, R> {
    fields: Compound<'r, C, R>,
    variant: &'static str,
}

impl<C, R> Variant<'_, C, R> {
    #[inline]
    fn named<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.fields.ctx.note(|| Segment::Variant(self.variant));
        }
        result
    }
}

impl<'r, C, R> Compound<'r, C, R> {
    #[inline]
    fn new(inner: C, ctx: Ctx<'r>) -> Self {
        Self {
            inner,
            ctx,
            index: 0,
            rules: PhantomData,
        }
    }

    /// `result` of the child at `segment`; notes the path when it failed.
    #[inline]
    fn child<T, E>(
        &mut self,
        result: Result<T, E>,
        segment: impl FnOnce() -> Segment,
    ) -> Result<T, E> {
        if result.is_err() {
            self.ctx.note(segment);
        }
        result
    }

    #[inline]
    fn element<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        let index = self.index;
        self.index += 1;
        self.child(result, || Segment::Index(index))
    }
}

impl<C: ser::SerializeSeq, R: Rules> ser::SerializeSeq for Compound<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_element(&Checked::<T, R>::new(value, self.ctx));
        self.element(result)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTuple, R: Rules> ser::SerializeTuple for Compound<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_element(&Checked::<T, R>::new(value, self.ctx));
        self.element(result)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleStruct, R: Rules> ser::SerializeTupleStruct for Compound<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_field(&Checked::<T, R>::new(value, self.ctx));
        self.element(result)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleVariant, R: Rules> ser::SerializeTupleVariant for Variant<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let fields = &mut self.fields;
        let result = fields
            .inner
            .serialize_field(&Checked::<T, R>::new(value, fields.ctx));
        let result = fields.element(result);
        self.named(result)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.fields.inner.end()
    }
}

impl<C: ser::SerializeMap, R: Rules> ser::SerializeMap for Compound<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_key(&Checked::<T, R>::new(key, self.ctx));
        self.child(result, || Segment::Key(None))
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_value(&Checked::<T, R>::new(value, self.ctx));
        self.child(result, || Segment::Key(None))
    }

    #[inline]
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        let result = self.inner.serialize_entry(
            &Checked::<K, R>::new(key, self.ctx),
            &Checked::<V, R>::new(value, self.ctx),
        );
        self.child(result, || Segment::Key(key.serialize(KeyName).ok()))
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStruct, R: Rules> ser::SerializeStruct for Compound<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        let result = self
            .inner
            .serialize_field(key, &Checked::<T, R>::new(value, self.ctx));
        self.child(result, || Segment::Field(key))
    }

    #[inline]
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStructVariant, R: Rules> ser::SerializeStructVariant for Variant<'_, C, R> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        let fields = &mut self.fields;
        let result = fields
            .inner
            .serialize_field(key, &Checked::<T, R>::new(value, fields.ctx));
        let result = fields.child(result, || Segment::Field(key));
        self.named(result)
    }

    #[inline]
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.fields.inner.skip_field(key)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.fields.inner.end()
    }
}

/// Renders a map key for the path of a refusal: strings quoted, numbers,
/// booleans and unit variants as they are; anything else is not rendered.
/// Runs only after a refusal.
struct KeyName;

/// A key [`KeyName`] does not render.
#[derive(Debug)]
struct NotAName;

impl fmt::Display for NotAName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key has no short name")
    }
}

impl std::error::Error for NotAName {}

impl ser::Error for NotAName {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self
    }
}

macro_rules! name_display {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<String, NotAName> {
                Ok(v.to_string())
            }
        )*
    };
}

macro_rules! name_refused {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $(_: $ty),*) -> Result<String, NotAName> {
                Err(NotAName)
            }
        )*
    };
}

impl Serializer for KeyName {
    type Ok = String;
    type Error = NotAName;
    type SerializeSeq = Impossible<String, NotAName>;
    type SerializeTuple = Impossible<String, NotAName>;
    type SerializeTupleStruct = Impossible<String, NotAName>;
    type SerializeTupleVariant = Impossible<String, NotAName>;
    type SerializeMap = Impossible<String, NotAName>;
    type SerializeStruct = Impossible<String, NotAName>;
    type SerializeStructVariant = Impossible<String, NotAName>;

    name_display! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64),
    }

    name_refused! {
        serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
    }

    fn serialize_char(self, v: char) -> Result<String, NotAName> {
        Ok(format!("{:?}", v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<String, NotAName> {
        Ok(format!("{v:?}"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, NotAName> {
        value.serialize(self)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, NotAName> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, NotAName> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, NotAName> {
        Err(NotAName)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, NotAName> {
        Err(NotAName)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, NotAName> {
        Err(NotAName)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAName> {
        Err(NotAName)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAName> {
        Err(NotAName)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, NotAName> {
        Err(NotAName)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, NotAName> {
        Err(NotAName)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, NotAName> {
        Err(NotAName)
    }
}
