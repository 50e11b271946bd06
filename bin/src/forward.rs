//! Hands the libtorch commands to the sibling `conveyor-torch` binary, which sits next to
//! this one, by replacing this process with it (same arguments, same terminal, same exit
//! status).

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

/// The name of the binary that holds the libtorch commands.
pub const TORCH_BIN: &str = "conveyor-torch";

/// Replaces this process with `conveyor-torch` and the same arguments; returns only on error.
pub fn to_torch() -> anyhow::Result<i32> {
    let me = std::env::current_exe().context("cannot find the conveyor binary's own path")?;
    let dir = me
        .parent()
        .context("the conveyor binary has no parent folder")?;
    let target = dir.join(TORCH_BIN);
    if !target.exists() {
        anyhow::bail!(
            "{} is missing: this command needs it beside the conveyor binary (build it with `make build`)",
            target.display()
        );
    }
    let err = Command::new(&target)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).with_context(|| format!("cannot start {}", target.display()))
}
