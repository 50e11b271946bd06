//! `bench train`'s outputs: the markdown table and the plots drawn beside it.

use std::io::Write;
use std::process::Command;

/// The memory figure of a point: peak GPU allocation on CUDA, peak resident set on CPU.
pub fn peak_mb(point: &serde_json::Value) -> f64 {
    point["peak_gpu_allocated_mb"]
        .as_f64()
        .or(point["peak_rss_mb"].as_f64())
        .unwrap_or(0.0)
}

/// bench-train.md: one row per point, GPU memory when the points ran on a GPU.
pub fn write_table(md: &std::path::Path, points: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(md)?;
    let on_gpu = points.iter().any(|p| !p["peak_gpu_allocated_mb"].is_null());
    let (memory, key) = if on_gpu {
        ("peak GPU MB (allocated)", "peak_gpu_allocated_mb")
    } else {
        ("peak RSS MB", "peak_rss_mb")
    };
    let with_mfu = points.iter().any(|p| !p["mfu"].is_null());
    let mfu_head = if with_mfu { " MFU |" } else { "" };
    writeln!(
        f,
        "| arch | input length | examples/s | {memory} | GFLOPs per example (train) | model TFLOP/s |{mfu_head}"
    )?;
    writeln!(
        f,
        "|---|---|---|---|---|---|{}",
        if with_mfu { "---|" } else { "" }
    )?;
    for p in points {
        let num = |k: &str, prec: usize| {
            p[k].as_f64()
                .map(|v| format!("{v:.prec$}"))
                .unwrap_or_else(|| p["error"].as_str().unwrap_or("-").to_string())
        };
        let mfu = if with_mfu {
            p["mfu"]
                .as_f64()
                .map(|m| format!(" {:.1}% |", 100.0 * m))
                .unwrap_or_else(|| " - |".into())
        } else {
            String::new()
        };
        writeln!(
            f,
            "| {} | {} | {} | {} | {:.3} | {} |{mfu}",
            p["arch"].as_str().unwrap_or(""),
            p["length"],
            num("examples_per_s", 2),
            num(key, 0),
            p["gflops_per_example"].as_f64().unwrap_or(0.0),
            num("model_tflops", 3),
        )?;
    }
    Ok(())
}

/// The plotting script, carried inside the binary so that the benchmark plots from any
/// folder (a study's, too).
const PLOT_BENCH_TRAIN: &str = include_str!("../../../../scripts/plot_bench_train.py");

/// speed.png and memory.png beside the table, when Python has matplotlib.
pub fn plot(out: &std::path::Path) {
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&python)
        .arg("-c")
        .arg(PLOT_BENCH_TRAIN)
        .arg(out)
        .output()
    {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        _ => {
            println!("(no plots: scripts/plot_bench_train.py needs matplotlib; `make` sets it up)")
        }
    }
}
