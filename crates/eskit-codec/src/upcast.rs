//! Typed upcasters: old struct -> new struct steps on top of the core's
//! raw-bytes [`UpcasterRegistry`].

use eskit_core::{
    error::BoxError,
    typed::{Codec, RegistryError, UpcasterRegistry},
};

/// Registers typed upcasting steps on an [`UpcasterRegistry`].
///
/// A typed step decodes the stored payload as the old type with a codec,
/// converts it, and encodes the new type with the same codec. It applies
/// only to events written by that codec, so a store mixing codecs registers
/// one step per codec. The old type
/// only has to exist in the code that registers the step; the core chains
/// steps v1 -> v2 -> v3 and reports a gap as
/// [`CodecError::MissingUpcaster`](eskit_core::error::CodecError::MissingUpcaster)
/// naming the missing step.
///
/// The payload of an enum event is its variant's content, so `Old` and `New`
/// are the content types (the structs inside the variants).
///
/// ```
/// # #[cfg(feature = "json")] {
/// use eskit_codec::{JsonCodec, TypedUpcasters};
/// use eskit_core::typed::UpcasterRegistry;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct DepositedV1 { cents: u64 }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct DepositedV2 { cents: u64, currency: String }
///
/// let mut up = UpcasterRegistry::new();
/// up.register_typed(JsonCodec, "Deposited", 1, 2, |old: DepositedV1| DepositedV2 {
///     cents: old.cents,
///     currency: "EUR".into(),
/// })?;
/// let v2 = up.upcast("Deposited", "json", br#"{"cents":5}"#, 1, 2)?;
/// assert_eq!(&*v2, br#"{"cents":5,"currency":"EUR"}"#);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TypedUpcasters {
    /// Registers the step `from -> to` for `event_type`, converting with `f`.
    ///
    /// # Errors
    /// As [`UpcasterRegistry::register`]: an invalid name, `from == 0`,
    /// `to <= from`, or a second step from the same version.
    fn register_typed<Old, New, C>(
        &mut self,
        codec: C,
        event_type: &str,
        from: u32,
        to: u32,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError>
    where
        C: Codec<Old> + Codec<New>,
        Old: 'static,
        New: 'static;

    /// Registers the step `from -> to` for `event_type` with a conversion
    /// that may fail; its error is reported as
    /// [`CodecError::Upcast`](eskit_core::error::CodecError::Upcast).
    ///
    /// # Errors
    /// As [`TypedUpcasters::register_typed`].
    fn try_register_typed<Old, New, C, Err>(
        &mut self,
        codec: C,
        event_type: &str,
        from: u32,
        to: u32,
        f: impl Fn(Old) -> Result<New, Err> + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError>
    where
        C: Codec<Old> + Codec<New>,
        Old: 'static,
        New: 'static,
        Err: Into<BoxError>;
}

impl TypedUpcasters for UpcasterRegistry {
    fn register_typed<Old, New, C>(
        &mut self,
        codec: C,
        event_type: &str,
        from: u32,
        to: u32,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError>
    where
        C: Codec<Old> + Codec<New>,
        Old: 'static,
        New: 'static,
    {
        self.try_register_typed(codec, event_type, from, to, move |old| {
            Ok::<_, BoxError>(f(old))
        })
    }

    fn try_register_typed<Old, New, C, Err>(
        &mut self,
        codec: C,
        event_type: &str,
        from: u32,
        to: u32,
        f: impl Fn(Old) -> Result<New, Err> + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError>
    where
        C: Codec<Old> + Codec<New>,
        Old: 'static,
        New: 'static,
        Err: Into<BoxError>,
    {
        let codec_name = Codec::<Old>::name(&codec);
        self.register_for_codec(event_type, codec_name, from, to, move |bytes| {
            let old = Codec::<Old>::decode(&codec, bytes)?;
            let new = f(old).map_err(Into::into)?;
            let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4);
            Codec::<New>::encode(&codec, &new, &mut out)?;
            Ok(out)
        })
    }
}
