//! Object-safe twins of the store traits, for backends chosen at run time
//! (the CLI, configuration-driven services).
//!
//! Every [`EventStore`] is a [`DynEventStore`] through a blanket impl, and
//! `Arc<dyn DynEventStore>`, `Box<dyn DynEventStore>` and
//! `&dyn DynEventStore` are [`EventStore`]s again, so generic code takes
//! either. The same holds for every backend trait and its `Dyn` twin; the
//! base traits also forward through `Arc<T>`, `Box<T>` and `&T`. One macro
//! generates all of it from each trait's method list, so a twin cannot drift
//! from its trait.
//!
//! ```
//! use std::sync::Arc;
//! use eskit_core::{event::StreamName, memory::MemoryStore, store::{DynEventStore, EventStore}};
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output { eskit_core::rt::block_on(f) }
//! let store: Arc<dyn DynEventStore> = Arc::new(MemoryStore::new());
//! let version = block_on(store.stream_version(&StreamName::new("t", "1")?))?;
//! assert_eq!(version.get(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use crate::claim::{
    AfterFailure, Claim, ClaimOptions, ClaimStore, ClaimedItem, Enqueued, NewWorkItem, WorkItem,
};
use crate::dcb::{EventQueryReader, QueryOptions};
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::error::StoreError;
use crate::event::{AppendResult, NewEvent, RawEvent};
use crate::name::StreamName;
use crate::sink::{ProjectionSink, SinkError};
use crate::store::{
    AppendOptions, CheckpointStore, EventStore, GlobalBatch, GlobalReader, LoadOptions, LockGuard,
    LockRegistry, ReadOptions, Snapshot, SnapshotStore, StreamLifecycle, StreamStatus,
};
use crate::version::{ExpectedVersion, GlobalCursor, Version};

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Generates, for a backend trait `$trait` whose methods return
/// `impl Future<Output = $r> + Send`:
/// - the object-safe twin `$dyn`, each method `$dm` returning a
///   [`BoxFuture`] that borrows `self` and every reference argument for
///   one lifetime `'a`;
/// - the blanket impl of `$dyn` for every `$trait`;
/// - `$trait` for `Arc`, `Box` and `&` of `dyn $dyn`, and for `Arc<T>`,
///   `Box<T>` and `&T` of any `T: $trait`, each forwarding every method
///   (defaulted ones too, so an override in `T` is kept).
///
/// A parameter written `&name: Type` is `name: &Type`; the macro needs the
/// reference spelled apart to give it the twin's lifetime. The `dyn`
/// impls carry `+ '_`, so a borrowed trait object works where a
/// higher-ranked bound needs it.
macro_rules! object_safe_twin {
    (
        $(#[$attr:meta])*
        $vis:vis trait $dyn:ident for $trait:ident {
            $(
                fn $m:ident => $dm:ident(
                    &self $(, $(&$ra:ident)? $($va:ident)? : $t:ty)* $(,)?
                ) -> $r:ty;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis trait $dyn: Send + Sync {
            $(
                #[doc = concat!("See [`", stringify!($trait), "::", stringify!($m), "`].")]
                fn $dm<'a>(
                    &'a self $(, $($ra: &'a $t)? $($va: $t)?)*
                ) -> BoxFuture<'a, $r>;
            )*
        }

        impl<T: $trait> $dyn for T {
            $(
                fn $dm<'a>(
                    &'a self $(, $($ra: &'a $t)? $($va: $t)?)*
                ) -> BoxFuture<'a, $r> {
                    Box::pin(<T as $trait>::$m(self $(, $($ra)? $($va)?)*))
                }
            )*
        }

        object_safe_twin!(@erased $trait, $dyn, Arc<dyn $dyn + '_>
            { $(fn $m => $dm(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
        object_safe_twin!(@erased $trait, $dyn, Box<dyn $dyn + '_>
            { $(fn $m => $dm(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
        object_safe_twin!(@erased $trait, $dyn, &(dyn $dyn + '_)
            { $(fn $m => $dm(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
        object_safe_twin!(@forward $trait, Arc<T>
            { $(fn $m(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
        object_safe_twin!(@forward $trait, Box<T>
            { $(fn $m(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
        object_safe_twin!(@forward $trait, &T
            { $(fn $m(&self $(, $(&$ra)? $($va)? : $t)*) -> $r;)* });
    };
    (@erased $trait:ident, $dyn:ident, $ty:ty {
        $(fn $m:ident => $dm:ident(&self $(, $(&$ra:ident)? $($va:ident)? : $t:ty)*) -> $r:ty;)*
    }) => {
        impl $trait for $ty {
            $(
                async fn $m(&self $(, $($ra: &$t)? $($va: $t)?)*) -> $r {
                    <dyn $dyn as $dyn>::$dm(&**self $(, $($ra)? $($va)?)*).await
                }
            )*
        }
    };
    (@forward $trait:ident, $ty:ty {
        $(fn $m:ident(&self $(, $(&$ra:ident)? $($va:ident)? : $t:ty)*) -> $r:ty;)*
    }) => {
        impl<T: $trait> $trait for $ty {
            $(
                fn $m(
                    &self $(, $($ra: &$t)? $($va: $t)?)*
                ) -> impl Future<Output = $r> + Send {
                    <T as $trait>::$m(&**self $(, $($ra)? $($va)?)*)
                }
            )*
        }
    };
}

object_safe_twin! {
    /// Object-safe [`EventStore`].
    pub trait DynEventStore for EventStore {
        fn append => dyn_append(
            &self,
            &stream: StreamName,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
            options: AppendOptions,
        ) -> Result<AppendResult, StoreError>;
        fn load => dyn_load(
            &self,
            &stream: StreamName,
            options: LoadOptions,
        ) -> Result<Vec<RawEvent>, StoreError>;
        fn stream_version => dyn_stream_version(
            &self,
            &stream: StreamName,
        ) -> Result<Version, StoreError>;
        fn find_idempotent => dyn_find_idempotent(
            &self,
            &stream: StreamName,
            &key: str,
        ) -> Result<Option<Vec<RawEvent>>, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`DeadLetterStore`].
    pub trait DynDeadLetterStore for DeadLetterStore {
        fn put => dyn_put(
            &self,
            &subscription: str,
            &event: RawEvent,
            &error: str,
            attempts: u32,
        ) -> Result<u64, StoreError>;
        fn list => dyn_list(
            &self,
            &subscription: str,
            after_id: u64,
            limit: usize,
        ) -> Result<Vec<DeadLetter>, StoreError>;
        fn get => dyn_get(&self, id: u64) -> Result<Option<DeadLetter>, StoreError>;
        fn delete => dyn_delete(&self, id: u64) -> Result<bool, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`GlobalReader`].
    pub trait DynGlobalReader for GlobalReader {
        fn read => dyn_read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError>;
        fn head => dyn_head(&self) -> Result<GlobalCursor, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`EventQueryReader`].
    pub trait DynEventQueryReader for EventQueryReader {
        fn query => dyn_query(&self, options: QueryOptions) -> Result<GlobalBatch, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`StreamLifecycle`].
    pub trait DynStreamLifecycle for StreamLifecycle {
        fn tombstone => dyn_tombstone(&self, &stream: StreamName, &reason: str) -> Result<(), StoreError>;
        fn archive => dyn_archive(&self, &stream: StreamName, &reason: str) -> Result<(), StoreError>;
        fn restore => dyn_restore(&self, &stream: StreamName) -> Result<(), StoreError>;
        fn delete => dyn_delete(&self, &stream: StreamName) -> Result<(), StoreError>;
        fn status => dyn_status(&self, &stream: StreamName) -> Result<StreamStatus, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`SnapshotStore`].
    pub trait DynSnapshotStore for SnapshotStore {
        fn save => dyn_save(&self, snapshot: Snapshot) -> Result<(), StoreError>;
        fn load => dyn_load(&self, &stream: StreamName) -> Result<Option<Snapshot>, StoreError>;
        fn invalidate => dyn_invalidate(&self, &stream: StreamName) -> Result<(), StoreError>;
        fn invalidate_all => dyn_invalidate_all(&self) -> Result<(), StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`CheckpointStore`].
    pub trait DynCheckpointStore for CheckpointStore {
        fn load => dyn_load(&self, &name: str) -> Result<Option<GlobalCursor>, StoreError>;
        fn save => dyn_save(&self, &name: str, cursor: GlobalCursor) -> Result<(), StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`LockRegistry`].
    pub trait DynLockRegistry for LockRegistry {
        fn acquire => dyn_acquire(&self, &key: str) -> Result<LockGuard, StoreError>;
        fn try_acquire => dyn_try_acquire(&self, &key: str) -> Result<Option<LockGuard>, StoreError>;
    }
}

object_safe_twin! {
    /// Object-safe [`ProjectionSink`].
    pub trait DynProjectionSink for ProjectionSink {
        fn cursor => dyn_cursor(&self, &name: str) -> Result<Option<GlobalCursor>, StoreError>;
        fn apply => dyn_apply(
            &self,
            &name: str,
            &events: [RawEvent],
            next: GlobalCursor,
        ) -> Result<(), SinkError>;
    }
}

object_safe_twin! {
    /// Object-safe [`ClaimStore`].
    pub trait DynClaimStore for ClaimStore {
        fn enqueue => dyn_enqueue(
            &self,
            &queue: str,
            items: Vec<NewWorkItem>,
        ) -> Result<Vec<Enqueued>, StoreError>;
        fn claim => dyn_claim(
            &self,
            &queue: str,
            options: ClaimOptions,
        ) -> Result<Vec<ClaimedItem>, StoreError>;
        fn renew => dyn_renew(&self, claim: Claim, lease: Duration) -> Result<bool, StoreError>;
        fn complete => dyn_complete(&self, claim: Claim) -> Result<bool, StoreError>;
        fn fail => dyn_fail(
            &self,
            claim: Claim,
            &error: str,
            then: AfterFailure,
        ) -> Result<bool, StoreError>;
        fn get => dyn_get(&self, id: u64) -> Result<Option<WorkItem>, StoreError>;
        fn dead => dyn_dead(
            &self,
            &queue: str,
            after_id: u64,
            limit: usize,
        ) -> Result<Vec<WorkItem>, StoreError>;
        fn requeue => dyn_requeue(&self, id: u64) -> Result<bool, StoreError>;
        fn delete => dyn_delete(&self, id: u64) -> Result<bool, StoreError>;
    }
}
