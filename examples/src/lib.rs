//! Runnable examples for eskit-rs: `cargo run --example counter`,
//! `cargo run --example bank`. This library only hosts the README's doctests.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
