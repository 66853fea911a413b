//! `cargo xtask codegen [--check]`: regenerates committed generated code
//! (prost messages for the Protobuf codec), or with `--check` fails when it
//! is stale.
//!
//! The generator is the `eskit-codegen` crate (prost-build plus protox, a
//! pure-Rust proto compiler, so no `protoc` is needed); xtask only runs it,
//! staying std-only and quick to build.

use crate::util;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    if let Some(other) = args.iter().find(|a| a.as_str() != "--check") {
        return Err(format!(
            "unknown argument `{other}` (usage: codegen [--check])"
        ));
    }
    let mut cmd = util::cargo();
    cmd.args(["run", "--quiet", "--package", "eskit-codegen", "--"]);
    if check {
        cmd.arg("--check");
    }
    util::run_cmd(&mut cmd)
}
