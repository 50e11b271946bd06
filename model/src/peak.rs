//! Model FLOPs utilisation (MFU): the model's own arithmetic per second (analytic FLOPs from
//! the shapes, `summary::forward_macs`) over the device's peak dense bf16 tensor throughput.
//! The peak comes from `--peak-tflops`, or from a table of known GPUs by the name the CUDA
//! runtime gives (`nvidia-smi`'s where the CUDA bridge is a stand-in); a CPU, or an unknown
//! GPU, has none unless given.

use std::process::Command;

use tch::Device;

/// Peak dense (not sparse) bf16 tensor-core throughput, TFLOP/s, from the vendors' data
/// sheets. Matched against the device name in order, so longer names come first.
const KNOWN: &[(&[&str], f64)] = &[
    (&["H200", "NVL"], 835.0),
    (&["H200"], 989.4),
    (&["H100", "PCIe"], 756.0),
    (&["H100", "NVL"], 835.0),
    (&["H100"], 989.4),
    (&["GH200"], 989.4),
    (&["A100"], 312.0),
    (&["A800"], 312.0),
    (&["L40S"], 362.1),
    (&["L40"], 181.0),
    (&["L4"], 121.0),
    (&["A10G"], 70.0),
    (&["A10"], 125.0),
];

/// The peak of a GPU by its name (`NVIDIA H200`, `NVIDIA A100-SXM4-80GB`, ...).
pub fn peak_bf16_tflops(name: &str) -> Option<f64> {
    let words: Vec<&str> = name
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty())
        .collect();
    KNOWN
        .iter()
        .find(|(keys, _)| keys.iter().all(|k| words.contains(k)))
        .map(|&(_, tflops)| tflops)
}

/// The name of CUDA device `index`: the CUDA runtime's (through libtorch, whatever tools the
/// machine has), else `nvidia-smi`'s.
pub fn cuda_device_name(index: usize) -> Option<String> {
    crate::cuda::device_name(index).or_else(|| nvidia_smi_name(index))
}

/// The name the NVIDIA driver gives CUDA device `index`, when `nvidia-smi` answers. Under
/// `CUDA_VISIBLE_DEVICES` the index is into that list (indices or UUIDs, which nvidia-smi
/// takes too); without it, nvidia-smi's order is assumed to be CUDA's (true unless the node
/// mixes GPU models and CUDA_DEVICE_ORDER is left at its default).
pub fn nvidia_smi_name(index: usize) -> Option<String> {
    let id = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(list) => list.split(',').nth(index)?.trim().to_string(),
        Err(_) => index.to_string(),
    };
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            &format!("--id={id}"),
        ])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// A device's peak and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    pub tflops: f64,
    /// `--peak-tflops`, or the device name it was looked up by.
    pub source: String,
}

impl Peak {
    /// `given` (from `--peak-tflops`) or the table's entry for `device`'s GPU.
    pub fn of(device: Device, given: Option<f64>) -> Option<Peak> {
        if let Some(t) = given.filter(|t| *t > 0.0) {
            return Some(Peak {
                tflops: t,
                source: "--peak-tflops".into(),
            });
        }
        let Device::Cuda(i) = device else { return None };
        let name = cuda_device_name(i)?;
        peak_bf16_tflops(&name).map(|tflops| Peak {
            tflops,
            source: name,
        })
    }

    /// The fraction of the peak that `flops` per `seconds` is.
    pub fn mfu(&self, flops: f64, seconds: f64) -> f64 {
        flops / seconds.max(1e-12) / (self.tflops * 1e12)
    }
}

/// FLOPs of one training step (forward and backward: three times the forward's, a
/// multiply-add counting two) over `rows` rows of the given padded widths.
pub fn train_flops(
    cfg: &crate::ModelConfig,
    rows: usize,
    inputs_width: usize,
    targets_width: usize,
) -> f64 {
    6.0 * rows as f64 * crate::summary::forward_macs(cfg, inputs_width, targets_width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_gpus_are_found_by_the_names_drivers_report() {
        for (name, want) in [
            ("NVIDIA H200", Some(989.4)),
            ("NVIDIA H200 NVL", Some(835.0)),
            ("NVIDIA GH200 480GB", Some(989.4)),
            ("NVIDIA L40", Some(181.0)),
            ("NVIDIA A10", Some(125.0)),
            ("NVIDIA H100 80GB HBM3", Some(989.4)),
            ("NVIDIA H100 PCIe", Some(756.0)),
            ("NVIDIA H100 NVL", Some(835.0)),
            ("NVIDIA A100-SXM4-80GB", Some(312.0)),
            ("NVIDIA A100 80GB PCIe", Some(312.0)),
            ("NVIDIA L40S", Some(362.1)),
            ("NVIDIA L4", Some(121.0)),
            ("NVIDIA A10G", Some(70.0)),
            ("Tesla V100-SXM2-16GB", None),
            ("NVIDIA GeForce RTX 4090", None),
        ] {
            assert_eq!(peak_bf16_tflops(name), want, "{name}");
        }
    }

    #[test]
    fn a_given_peak_wins_and_a_cpu_has_none_without_it() {
        assert_eq!(Peak::of(Device::Cpu, None), None);
        let p = Peak::of(Device::Cpu, Some(100.0)).unwrap();
        assert_eq!(p.source, "--peak-tflops");
        // 50 TFLOPs of work in one second on a 100 TFLOP/s device.
        assert!((p.mfu(50e12, 1.0) - 0.5).abs() < 1e-12);
    }

    /// The paper's base transformer step: 128 x 512 inputs and 128 targets (`model summary`'s
    /// default, a quarter of the input) is the 56.0 TFLOPs docs/replication.md quotes; the
    /// H200 benchmark's 114 targets give 54.5.
    #[test]
    fn a_base_transformer_step_is_56_tflops() {
        let cfg = crate::ModelConfig::preset(crate::Arch::Transformer, "base", 32_100).unwrap();
        let at = |targets| train_flops(&cfg, 128, 512, targets) / 1e12;
        assert!((at(128) - 56.0).abs() < 0.05, "{}", at(128));
        assert!((at(114) - 54.52).abs() < 0.05, "{}", at(114));
    }
}
