//! Testing tools for eskit-rs backends: the store [`conformance`] suite
//! every backend runs, a [`history`] checker for concurrency tests, and the
//! [`bench`](mod@bench) workloads behind `cargo xtask bench`.
//!
//! Depends only on `eskit-core` and no async runtime: concurrency comes
//! from an [`Executor`] the runner supplies ([`ThreadExecutor`] by default).
//!
//! # Feature flags
//! | feature | what it adds |
//! | --- | --- |
//! | `processor` | the `processor` module: RELIABILITY C1-C4 (and leader handover) for `eskit-processor`, written once and run by every backend; brings in `eskit-processor` and Tokio |
//!
//! # Example
//! Running a few conformance scenarios against the memory backend:
//!
//! ```
//! use eskit_core::memory::MemoryStore;
//! use eskit_testing::conformance::{Fixture, Suite};
//!
//! let report = Suite::new("memory", || async {
//!     Ok::<_, eskit_core::error::BoxError>(Fixture::store(MemoryStore::new()))
//! })
//! .filter("expected.")
//! .run();
//! assert!(report.is_success(), "{report}");
//! assert!(report.summary().starts_with("conformance memory: "));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod conformance;
mod executor;
pub mod history;
#[cfg(feature = "processor")]
pub mod processor;

pub use executor::{Executor, Task, TaskError, ThreadExecutor, run, spawn, yield_now};
