//! `cargo xtask codegen`.

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    Err("`codegen` is not implemented yet".to_owned())
}
