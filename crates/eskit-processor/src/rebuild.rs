//! Zero-downtime rebuilds: a read model rebuilt from zero in a shadow while
//! the live one keeps serving, then swapped in atomically.

use std::fmt;
use std::sync::Arc;

use eskit_core::{
    error::StoreError,
    event::GlobalCursor,
    store::{CommitFeed, GlobalReader, ShadowRebuild, SwapOutcome},
};

use crate::subscription::with_name;
use crate::view::run_to_head;
use crate::{Subscription, SubscriptionError, SubscriptionOptions};

/// How many times [`rebuild_in_shadow`] catches the shadow up and tries the
/// swap before it gives up (each try fails only when the live read model
/// moved on meanwhile).
pub const MAX_SWAP_ATTEMPTS: u32 = 100;

/// Why a zero-downtime rebuild stopped; the live read model is untouched.
#[derive(Debug)]
#[non_exhaustive]
pub enum RebuildError {
    /// Creating the shadow or swapping it in failed.
    Store(StoreError),
    /// The subscription filling the shadow stopped with an error.
    Subscription(SubscriptionError),
    /// The shadow was still behind the live read model after
    /// [`MAX_SWAP_ATTEMPTS`] catch-ups (writes outpace the rebuild).
    NeverCaughtUp {
        /// Swaps tried.
        attempts: u32,
    },
    /// The shadow vanished before the swap (another rebuild of the same
    /// read model swapped it in or replaced it).
    ShadowGone,
}

impl fmt::Display for RebuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(_) => f.write_str("the shadow could not be created or swapped in"),
            Self::Subscription(_) => f.write_str("filling the shadow failed"),
            Self::NeverCaughtUp { attempts } => write!(
                f,
                "the shadow was still behind the live read model after {attempts} swap attempts"
            ),
            Self::ShadowGone => f.write_str("the shadow vanished before the swap"),
        }
    }
}

impl std::error::Error for RebuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Subscription(e) => Some(e),
            Self::NeverCaughtUp { .. } | Self::ShadowGone => None,
        }
    }
}

/// Rebuilds `target` from zero without downtime: creates an empty shadow,
/// replays the log into it with a subscription configured by `options`
/// (batch size, filters, retry; its name is replaced by the target's
/// [`shadow_name`](ShadowRebuild::shadow_name)) until it has caught up,
/// then swaps it in. The live read model serves reads, and its live
/// subscription may go on, until the swap; when the live one moved past
/// the shadow meanwhile, the shadow catches up again and the swap is tried
/// again. Returns the cursor of the swapped-in read model.
///
/// Give `options` the live subscription's filters: a shadow built with
/// other filters is a different read model.
///
/// # Errors
/// [`RebuildError`]; the live read model is then as it was.
pub async fn rebuild_in_shadow<R, T>(
    reader: R,
    target: &T,
    options: SubscriptionOptions,
) -> Result<GlobalCursor, RebuildError>
where
    R: GlobalReader + CommitFeed + Clone,
    T: ShadowRebuild,
{
    let options = with_name(options, target.shadow_name()).map_err(RebuildError::Subscription)?;
    let shadow = Arc::new(target.begin_shadow().await.map_err(RebuildError::Store)?);
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let sub = Subscription::with_sink(reader.clone(), Arc::clone(&shadow), options.clone());
        run_to_head(sub).await.map_err(RebuildError::Subscription)?;
        match target.swap_in_shadow().await.map_err(RebuildError::Store)? {
            SwapOutcome::Swapped { cursor } => return Ok(cursor),
            SwapOutcome::NoShadow => return Err(RebuildError::ShadowGone),
            // The enum may grow; anything else means "not yet".
            _ => {}
        }
    }
    Err(RebuildError::NeverCaughtUp {
        attempts: MAX_SWAP_ATTEMPTS,
    })
}
