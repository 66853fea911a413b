//! Memory backend benchmarks.
fn main() {}
