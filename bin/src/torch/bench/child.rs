//! The benchmark's child processes: running one, watching its peak memory and time, and
//! naming in one line why it failed.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a child and parses the JSON it prints.
pub fn child_json(cmd: &mut Command) -> anyhow::Result<serde_json::Value> {
    let o = cmd.output()?;
    anyhow::ensure!(
        o.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// One line saying why a point's child failed: out of memory when libtorch said so (its
/// message is pages long), else the last line of its error output that is not a hint.
pub fn failure_reason(stderr: &str) -> String {
    if stderr.contains("CUDA out of memory") {
        return "out of GPU memory".into();
    }
    if stderr.contains("out of memory") || stderr.contains("std::bad_alloc") {
        return "out of memory".into();
    }
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("failed")
        .chars()
        .take(200)
        .collect()
}

/// Waits for a child, sampling its peak resident memory (VmHWM, kB) every 20 ms and killing
/// it after `limit`: its exit status (None when killed), peak and output.
pub fn watch(
    mut child: std::process::Child,
    limit: Duration,
) -> anyhow::Result<(Option<std::process::ExitStatus>, u64, std::process::Output)> {
    let pid = child.id();
    let started = Instant::now();
    let mut peak_kb = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                let kb = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                peak_kb = peak_kb.max(kb);
            }
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status, peak_kb, child.wait_with_output()?))
}

#[cfg(test)]
mod tests {
    use super::failure_reason;

    #[test]
    fn failures_are_named_in_one_line() {
        let oom = "thread 'main' panicked\ncalled `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 1.50 GiB\nframe #0: ...\")\nnote: run with `RUST_BACKTRACE=1`";
        assert_eq!(failure_reason(oom), "out of GPU memory");
        assert_eq!(
            failure_reason("Error: unknown arch foo\nnote: Some details are omitted\n"),
            "Error: unknown arch foo"
        );
        assert_eq!(failure_reason(""), "failed");
    }
}
