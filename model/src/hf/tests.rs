//! Parity with transformers' T5 (scripts/hf_parity.py builds random-weight models from a
//! T5Config; no network): logits of padded batches, greedy decoding, loss, gradients and one
//! Adafactor step after import; logits after export; and the same comparisons catching a
//! swapped q/k, a lost layer and dropped logits scaling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::*;
use crate::optim::Optimizer;

fn python() -> String {
    std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into())
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hf_parity.py");

fn run_script(args: &[&str]) -> String {
    let o = std::process::Command::new(python())
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run python (scripts/setup.sh's environment has transformers)");
    assert!(
        o.status.success(),
        "hf_parity.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("conveyor-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

/// Teacher-forced logits of the reference batch (eval mode).
fn logits(m: &Seq2Seq, r: &BTreeMap<String, Tensor>) -> Tensor {
    let _g = tch::no_grad_guard();
    let enc = m.encode(&r["inputs"], &r["input_mask"], false);
    let dec_in = m.shift_right(&r["targets"], None);
    m.logits(&m.decode(&dec_in, &enc, &r["input_mask"], false))
}

fn var(m: &Imported, name: &str) -> Tensor {
    m.vs.variables()[name].shallow_clone()
}

/// The comparisons of one variant; each sabotage below must break the logits check.
fn check_variant(variant: &str) {
    let dir = tmp(variant);
    run_script(&[
        "make",
        dir.to_str().unwrap(),
        "--variant",
        variant,
        "--seed",
        "3",
    ]);
    let r = read(&dir.join("reference.safetensors"));
    let m = load(&dir.join("hf")).unwrap();

    // (a) logits of a padded batch with attention masks.
    let ours = logits(&m.model, &r);
    let d = max_diff(&ours, &r["logits"]);
    assert!(d <= 1e-4, "{variant}: logits differ by {d}");
    let mut worst = [d, 0.0, 0.0, 0.0];

    // (b) greedy decoding: generate() starts with the decoder start id and pads after EOS.
    let got = m.model.greedy(&r["inputs"], &r["input_mask"], 8, 1);
    let want = r["generated"].narrow(1, 1, r["generated"].size()[1] - 1);
    for (row, g) in got.iter().enumerate() {
        let w: Vec<i64> = Vec::try_from(want.get(row as i64)).unwrap();
        let end = w.iter().position(|&t| t == 1).map_or(w.len(), |p| p + 1);
        assert_eq!(&g[..end.min(g.len())], &w[..end], "{variant}: row {row}");
    }

    // (d) loss and gradients of one training step, then the weights after Adafactor.
    let loss = m.model.loss(
        &r["inputs"],
        &r["input_mask"],
        &r["targets"],
        &r["target_mask"],
        true,
    );
    let want_loss = r["loss"].double_value(&[0]);
    assert!(
        (loss.double_value(&[]) - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
        "{variant}: loss {} vs {want_loss}",
        loss.double_value(&[])
    );
    loss.backward();
    let mut named: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
    for ((name, _), g) in named.iter().zip(&grads) {
        let theirs = format!("grad/{}", hf_name(name).unwrap());
        let d = max_diff(g, &r[&theirs]);
        assert!(d <= 1e-4, "{variant}: gradient of {name} differs by {d}");
        worst[1] = f64::max(worst[1], d);
    }
    let mut opt = Optimizer::new(
        OptimizerKind::adafactor(),
        Schedule::Constant { lr: 1e-3 },
        &params,
    );
    opt.step(&mut params, &grads);
    for (name, p) in &named {
        let theirs = format!("updated/{}", hf_name(name).unwrap());
        let d = max_diff(p, &r[&theirs]);
        assert!(
            d <= 1e-5,
            "{variant}: {name} after Adafactor differs by {d}"
        );
        worst[2] = f64::max(worst[2], d);
    }

    // (c) export: transformers loads the folder and gives conveyor's logits.
    let m = load(&dir.join("hf")).unwrap();
    let ckpt = dir.join("ckpt");
    import(&dir.join("hf"), &ckpt).unwrap();
    export(&ckpt, &dir.join("exported"), None).unwrap();
    let batch = dir.join("reference.safetensors");
    let out = dir.join("exported-logits.safetensors");
    run_script(&[
        "logits",
        dir.join("exported").to_str().unwrap(),
        batch.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let d = max_diff(&read(&out)["logits"], &logits(&m.model, &r));
    assert!(d <= 1e-4, "{variant}: exported logits differ by {d}");
    worst[3] = d;
    eprintln!(
        "{variant}: largest differences from transformers: logits {:.1e}, gradients {:.1e}, weights after Adafactor {:.1e}, exported logits {:.1e}",
        worst[0], worst[1], worst[2], worst[3]
    );

    // The checks can fail: each of these mistakes moves the logits far past the tolerance.
    let _g = tch::no_grad_guard();
    let broken = |what: &str, m: &Imported| {
        let d = max_diff(&logits(&m.model, &r), &r["logits"]);
        assert!(d > 1e-2, "{variant}: {what} went unnoticed ({d})");
    };
    let mut m = load(&dir.join("hf")).unwrap();
    let (mut q, mut k) = (
        var(&m, "encoder.layers.1.mixer.q.weight"),
        var(&m, "encoder.layers.1.mixer.k.weight"),
    );
    let q0 = q.copy();
    q.copy_(&k);
    k.copy_(&q0);
    broken("swapping q and k", &m);
    m = load(&dir.join("hf")).unwrap();
    // A layer lost: its sublayers add nothing to the residual stream.
    let last = m.config.decoder_layers - 1;
    for w in ["mixer.o", "cross.o", "ffn.wo"] {
        let _ = var(&m, &format!("decoder.layers.{last}.{w}.weight")).zero_();
    }
    broken("losing a layer", &m);
    if m.config.tie_embeddings {
        let m = load(&dir.join("hf")).unwrap();
        let enc = m.model.encode(&r["inputs"], &r["input_mask"], false);
        let hidden = m.model.decode(
            &m.model.shift_right(&r["targets"], None),
            &enc,
            &r["input_mask"],
            false,
        );
        let unscaled = hidden.matmul(&var(&m, "shared.weight").tr());
        let d = max_diff(&unscaled, &r["logits"]);
        assert!(
            d > 1e-2,
            "{variant}: dropping the logits scaling went unnoticed"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn t5_v1_0_matches_transformers() {
    let _rng = crate::test_rng();
    check_variant("v1.0");
}

#[test]
fn t5_v1_1_matches_transformers() {
    let _rng = crate::test_rng();
    check_variant("v1.1");
}

#[test]
fn a_wider_t5_v1_0_matches_transformers() {
    let _rng = crate::test_rng();
    check_variant("v1.0-wide");
}

/// A conveyor-trained shape (random conveyor weights, not an import) exports to a folder
/// transformers gives conveyor's logits with, tokenizer included.
#[test]
fn a_conveyor_model_exports_to_transformers() {
    let _rng = crate::test_rng();
    let dir = tmp("native");
    run_script(&[
        "make",
        dir.to_str().unwrap(),
        "--variant",
        "v1.1",
        "--seed",
        "5",
    ]);
    let r = read(&dir.join("reference.safetensors"));
    tch::manual_seed(11);
    let mut cfg = read_config(&dir.join("hf")).unwrap();
    cfg.d_kv = Some(12);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    {
        let _g = tch::no_grad_guard();
        for (name, mut t) in vs.variables() {
            if name.contains("norm") {
                let _ = t.uniform_(0.5, 1.5);
            }
        }
    }
    let ckpt = dir.join("ckpt");
    crate::checkpoint::write_files(&ckpt, &vs, &cfg, &[], &initial_state()).unwrap();
    // The fixture vocabulary's pieces and extra ids need more rows than this model has.
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vocab/fixture.model");
    let e = export(&ckpt, &dir.join("exported"), Some(&vocab)).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    export(&ckpt, &dir.join("exported"), None).unwrap();
    let out = dir.join("logits.safetensors");
    let batch = dir.join("reference.safetensors");
    run_script(&[
        "logits",
        dir.join("exported").to_str().unwrap(),
        batch.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let ours = {
        let _g = tch::no_grad_guard();
        let enc = model.encode(&r["inputs"], &r["input_mask"], false);
        model.logits(&model.decode(
            &model.shift_right(&r["targets"], None),
            &enc,
            &r["input_mask"],
            false,
        ))
    };
    let d = max_diff(&read(&out)["logits"], &ours);
    assert!(d <= 1e-4, "exported logits differ by {d}");
    // The folder is written once: a second export into it is refused.
    let e = export(&ckpt, &dir.join("exported"), None).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
