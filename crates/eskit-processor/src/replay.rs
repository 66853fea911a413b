//! Replaying dead letters: after the cause of a failure is fixed, run the
//! handler again on the events a subscription gave up on.

use std::fmt;

use eskit_core::{
    error::{BoxError, StoreError},
    limits::MAX_READ_LIMIT,
    store::{DeadLetter, DeadLetterStore},
};

use crate::subscription::BatchHandler;

/// Why a replay stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// The dead-letter store failed.
    Store(StoreError),
    /// The handler failed on the letter again; the letter is kept.
    Handler {
        /// The letter's id.
        id: u64,
        /// The handler's error.
        source: BoxError,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(_) => f.write_str("the dead-letter store failed during a replay"),
            Self::Handler { id, .. } => {
                write!(
                    f,
                    "the handler failed again on dead letter {id}; it is kept"
                )
            }
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Handler { source, .. } => Some(source.as_ref()),
        }
    }
}

impl From<StoreError> for ReplayError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Runs `handler` on the event of dead letter `id` and deletes the letter
/// when the handler succeeds. Returns the letter, or `None` when no letter
/// has that id (already replayed or deleted).
///
/// The handler gets the one event as a page of its own, as the
/// subscription would have delivered it; it must be idempotent (a replay
/// interrupted between the handler and the delete runs it again).
///
/// # Errors
/// [`ReplayError::Handler`] when the handler fails again (the letter is
/// kept), [`ReplayError::Store`] when the store fails.
pub async fn replay_dead_letter<D, H>(
    letters: &D,
    id: u64,
    handler: &H,
) -> Result<Option<DeadLetter>, ReplayError>
where
    D: DeadLetterStore + ?Sized,
    H: BatchHandler + ?Sized,
{
    let Some(letter) = letters.get(id).await? else {
        return Ok(None);
    };
    handler
        .handle(std::slice::from_ref(&letter.event))
        .await
        .map_err(|source| ReplayError::Handler { id, source })?;
    letters.delete(id).await?;
    Ok(Some(letter))
}

/// Replays every dead letter of `subscription`, oldest first, with
/// [`replay_dead_letter`]; stops at the first one the handler fails on
/// again (it and every later letter are kept). Returns how many were
/// replayed and deleted.
///
/// # Errors
/// As [`replay_dead_letter`].
pub async fn replay_dead_letters<D, H>(
    letters: &D,
    subscription: &str,
    handler: &H,
) -> Result<u64, ReplayError>
where
    D: DeadLetterStore + ?Sized,
    H: BatchHandler + ?Sized,
{
    let mut replayed = 0;
    let mut after = 0;
    loop {
        let page = letters.list(subscription, after, MAX_READ_LIMIT).await?;
        let Some(last) = page.last() else {
            return Ok(replayed);
        };
        after = last.id;
        for letter in page {
            if replay_dead_letter(letters, letter.id, handler)
                .await?
                .is_some()
            {
                replayed += 1;
            }
        }
    }
}
