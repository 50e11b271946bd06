//! `conveyor inspect DIR | head` ends quietly, as Unix tools do. Rust ignores SIGPIPE, so a
//! write to a closed pipe is an error, which `println!` turns into a panic ("failed printing
//! to stdout: Broken pipe") with a backtrace and status 101. Restoring SIGPIPE's default
//! would also kill the process on a peer's closed socket (remote reads and uploads), so the
//! panic is recognised instead: the reader has gone, and the command ends without a word
//! with status 141, a shell's status for a process SIGPIPE ended (work it had not finished,
//! a study whose log reader died, is not reported as done; `set -o pipefail` sees it).

/// Installs the hook; other panics are reported as before.
pub fn end_quietly() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info)
    }));
}
