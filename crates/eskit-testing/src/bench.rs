//! Benchmark workloads (W1 to W8) shared by every backend; see `cargo xtask bench`.
