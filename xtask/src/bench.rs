//! `cargo xtask bench`.

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    Err("`bench` is not implemented yet".to_owned())
}
