//! Runnable examples for eskit-rs: `cargo run --example counter`,
//! `cargo run --example bank`, `cargo run --example bank_live` (a live
//! read model and a processor, on tokio), `cargo run --example inventory`
//! (on tokio).
//! This library only hosts the README's doctests.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
