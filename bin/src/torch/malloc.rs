//! Keeps freed tensor memory in the process instead of handing it back to the kernel.
//!
//! glibc's malloc serves every block above its mmap threshold (128 KB, rising adaptively to at
//! most 32 MB) with a fresh `mmap` and unmaps it when freed. A training step allocates and
//! frees the same large activations every time, so each step page-faults all of them in again:
//! on the CPU that was 3.7 M page faults and 6 s of system time for 4 steps of the `small`
//! transformer at 512 tokens. Raising the threshold to its maximum makes freed blocks reusable
//! (1.1 M faults, 2 s, ~12% faster steps). This is what `MALLOC_MMAP_THRESHOLD_` does.
//!
//! Setting that threshold also freezes the trim threshold at 128 KB: whenever the free space at
//! the top of the heap passes it, glibc returns it to the kernel, and the next step faults it
//! in again. For the `tiny` transformer at batch 1 x 16 tokens (where a step is mostly
//! allocator and dispatch work) that was ~9,500 page faults a step; with the trim threshold at
//! its maximum too, ~50, and the step went from 32 to 18 ms (`bench train-one`, docs/benchmarks.md).
//! Freed memory then stays with the process, as in PyTorch's CUDA caching allocator: the
//! resident size is the peak, not the current need. Values the user set in the environment
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) are left alone.

/// Applies the setting (glibc on Linux only; elsewhere nothing happens).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // Older glibc (before 2.35) refuses an mmap threshold above 32 MiB: that cap then.
        // Setting either threshold turns glibc's adaptive ones off, so the mmap threshold
        // must not stay at its 128 KiB start.
        const OLD_CAP: std::ffi::c_int = 32 << 20;
        for (param, variable) in [
            (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
            (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
        ] {
            if std::env::var_os(variable).is_none() {
                // SAFETY: mallopt only changes malloc's tuning; called first thing in main,
                // before any other thread exists.
                unsafe {
                    if mallopt(param, std::ffi::c_int::MAX) == 0 {
                        mallopt(param, OLD_CAP);
                    }
                }
            }
        }
    }
}

/// Minor page faults of this process so far (Linux: `/proc/self/stat`; elsewhere `None`).
/// `bench train-one` reports them per step: a steady training step should fault nothing in.
pub fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 10 (minflt); the command name (field 2) is parenthesised and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(7)?.parse().ok()
}
