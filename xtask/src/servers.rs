//! `cargo xtask servers`.

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    Err("`servers` is not implemented yet".to_owned())
}
