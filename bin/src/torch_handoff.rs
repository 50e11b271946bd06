//! Hands the libtorch commands to the sibling `conveyor-torch` binary, which sits next to
//! this one, by replacing this process with it (same arguments, same terminal, same exit
//! status).

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

// The arguments of a command `conveyor-torch` holds: taken as they are (its own parser
// checks them, and `--help` is its), so this binary links no libtorch. (A plain comment:
// a doc comment here would be the variants' help.)
#[derive(clap::Args)]
pub struct Handoff {
    /// Handed to the libtorch binary as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<std::ffi::OsString>,
}

/// The name of the binary that holds the libtorch commands.
pub const TORCH_BIN: &str = "conveyor-torch";

/// The `conveyor-torch` binary beside this one.
fn torch_bin() -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe().context("cannot find the conveyor binary's own path")?;
    let dir = me
        .parent()
        .context("the conveyor binary has no parent folder")?;
    Ok(dir.join(TORCH_BIN))
}

/// Runs a libtorch command as a child process (the demo and studies do, as a user would);
/// its standard output, or an error carrying its standard error.
pub fn run_torch<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<String> {
    let bin = torch_bin()?;
    let o = Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        o.status.success(),
        "conveyor {} failed: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs a libtorch command as a child whose progress (standard error) shows on this
/// process's standard error as it goes (the study runner's long cells); fails naming the
/// command when it does.
pub fn run_torch_live<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<()> {
    let bin = torch_bin()?;
    let status = Command::new(&bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        status.success(),
        "conveyor {} failed ({status}); its messages are above",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Replaces this process with `conveyor-torch` and the same arguments; returns only on error.
pub fn to_torch() -> anyhow::Result<i32> {
    let target = torch_bin()?;
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
