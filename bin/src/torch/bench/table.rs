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

/// The series a point belongs to: its architecture, with the attention when not the
/// explicit one ("transformer (sdpa)").
pub fn series(point: &serde_json::Value) -> String {
    let arch = point["arch"].as_str().unwrap_or("");
    match point["attention"].as_str() {
        None | Some("explicit") => arch.to_string(),
        Some(a) => format!("{arch} ({a})"),
    }
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
            series(p),
            p["length"],
            num("examples_per_s", 2),
            num(key, 0),
            p["gflops_per_example"].as_f64().unwrap_or(0.0),
            num("model_tflops", 3),
        )?;
    }
    write_ratios(&mut f, points, key)
}

/// The paper's two figures as ratios, one row per length: each other series' examples/s and
/// peak memory over the transformer's at the same length ("-" where either point has no
/// figure): the explicit-attention transformer's when measured, the transformer with sdpa
/// then being one of the other series.
fn write_ratios(
    f: &mut impl Write,
    points: &[serde_json::Value],
    memory_key: &str,
) -> anyhow::Result<()> {
    let find = |name: &str, length: &serde_json::Value| {
        points
            .iter()
            .find(|p| series(p) == name && &p["length"] == length)
    };
    // The explicit transformer, else (`--attention sdpa` alone) the one measured.
    let names: Vec<String> = points.iter().map(series).collect();
    let base = match names.iter().any(|n| n == "transformer") {
        true => "transformer".to_string(),
        false => match names.iter().find(|n| n.starts_with("transformer")) {
            Some(n) => n.clone(),
            None => return Ok(()),
        },
    };
    let mut others: Vec<String> = Vec::new();
    for a in names {
        if a != base && !others.contains(&a) {
            others.push(a);
        }
    }
    let lengths: Vec<&serde_json::Value> = points
        .iter()
        .filter(|p| series(p) == base)
        .map(|p| &p["length"])
        .collect();
    if others.is_empty() || lengths.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "\nRelative to the {base} at the same length: speed (examples/s) and peak memory, other / {base}.\n"
    )?;
    let heads: Vec<String> = others
        .iter()
        .flat_map(|a| [format!("{a} speed"), format!("{a} memory")])
        .collect();
    writeln!(f, "| input length | {} |", heads.join(" | "))?;
    writeln!(f, "|---|{}", "---|".repeat(heads.len()))?;
    for length in lengths {
        let t = find(&base, length);
        let mut cells = Vec::new();
        for a in &others {
            let o = find(a, length);
            for key in ["examples_per_s", memory_key] {
                let ratio = o
                    .and_then(|o| o[key].as_f64())
                    .zip(t.and_then(|t| t[key].as_f64()))
                    .filter(|(_, t)| *t > 0.0)
                    .map(|(o, t)| format!("{:.2}x", o / t));
                cells.push(ratio.unwrap_or_else(|| "-".into()));
            }
        }
        writeln!(f, "| {length} | {} |", cells.join(" | "))?;
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
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("No module named 'matplotlib'") => {
            let why = super::child::failure_reason(&String::from_utf8_lossy(&o.stderr));
            println!("(plotting failed: {why})")
        }
        _ => {
            println!("(no plots: scripts/plot_bench_train.py needs matplotlib; `make` sets it up)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio table of points given as JSON.
    fn ratios(json: &str) -> String {
        let points: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        write_ratios(&mut out, &points, "peak_gpu_allocated_mb").unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ratios_are_each_architecture_over_the_transformer_by_length() {
        let text = ratios(
            r#"[
            {"arch": "transformer", "length": 64, "examples_per_s": 50.0, "peak_gpu_allocated_mb": 1000.0},
            {"arch": "transformer", "length": 4096, "error": "out of GPU memory"},
            {"arch": "lightconv", "length": 64, "examples_per_s": 75.0, "peak_gpu_allocated_mb": 500.0},
            {"arch": "lightconv", "length": 4096, "examples_per_s": 20.0, "peak_gpu_allocated_mb": 9000.0}
        ]"#,
        );
        assert!(
            text.contains("| input length | lightconv speed | lightconv memory |"),
            "{text}"
        );
        assert!(text.contains("| 64 | 1.50x | 0.50x |"), "{text}");
        // No transformer figure at 4096: no ratio.
        assert!(text.contains("| 4096 | - | - |"), "{text}");
    }

    /// With `--attention explicit,sdpa`, the transformer with sdpa is its own series beside
    /// the conv models, and every ratio is over the explicit transformer.
    #[test]
    fn sdpa_is_a_series_of_its_own_over_the_explicit_transformer() {
        let json = r#"[
            {"arch": "transformer", "attention": "explicit", "length": 64, "examples_per_s": 50.0, "peak_gpu_allocated_mb": 1000.0},
            {"arch": "transformer", "attention": "sdpa", "length": 64, "examples_per_s": 60.0, "peak_gpu_allocated_mb": 400.0},
            {"arch": "lightconv", "attention": "explicit", "length": 64, "examples_per_s": 75.0, "peak_gpu_allocated_mb": 500.0},
            {"arch": "lightconv", "attention": "sdpa", "length": 64, "examples_per_s": 100.0, "peak_gpu_allocated_mb": 250.0}
        ]"#;
        let text = ratios(json);
        assert!(
            text.contains("| input length | transformer (sdpa) speed | transformer (sdpa) memory | lightconv speed | lightconv memory | lightconv (sdpa) speed | lightconv (sdpa) memory |"),
            "{text}"
        );
        assert!(
            text.contains("| 64 | 1.20x | 0.40x | 1.50x | 0.50x | 2.00x | 0.25x |"),
            "{text}"
        );
        let points: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        let names: Vec<String> = points.iter().map(series).collect();
        assert_eq!(names[0], "transformer");
        assert_eq!(names[1], "transformer (sdpa)");
        // `--attention sdpa` alone: over the transformer that was measured.
        let text = ratios(
            r#"[
            {"arch": "transformer", "attention": "sdpa", "length": 64, "examples_per_s": 60.0, "peak_gpu_allocated_mb": 400.0},
            {"arch": "lightconv", "attention": "sdpa", "length": 64, "examples_per_s": 90.0, "peak_gpu_allocated_mb": 200.0}
        ]"#,
        );
        assert!(text.contains("other / transformer (sdpa)"), "{text}");
        assert!(text.contains("| 64 | 1.50x | 0.50x |"), "{text}");
    }
}
