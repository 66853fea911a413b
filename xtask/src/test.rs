//! `cargo xtask test`.

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    Err("`test` is not implemented yet".to_owned())
}
