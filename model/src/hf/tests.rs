//! Parity with transformers' T5 and mT5, versions 4 and 5 (scripts/hf_parity.py builds
//! random-weight models from their configs; no network): logits of padded batches, greedy
//! decoding, loss, gradients and two Adafactor steps after import (from one file, from shards
//! and from bfloat16); logits after export; transformers 5's own config form; and the same
//! comparisons catching a swapped q/k, a lost layer and the logits scaling flipped.
//! Convolutional models round-trip through the same folder layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::*;
use crate::config::Arch;
use crate::optim::Optimizer;

fn python() -> String {
    std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into())
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hf_parity.py");

/// Which transformers the script runs with: the environment's 4.57.6, or 5.17.0 from the
/// folder scripts/setup.sh installs beside it (`CONVEYOR_TRANSFORMERS5`, which the Makefile
/// sets; else `transformers5` in the environment of `CONVEYOR_PYTHON`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hf {
    V4,
    V5,
}

impl Hf {
    fn command(self) -> std::process::Command {
        let mut c = std::process::Command::new(python());
        if self == Hf::V5 {
            let dir = transformers5_dir().expect("transformers 5: run scripts/setup.sh");
            c.env("PYTHONPATH", dir);
        }
        c
    }
}

fn run_script(hf: Hf, args: &[&str]) -> String {
    let o = hf
        .command()
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run python (scripts/setup.sh's environment has transformers)");
    assert!(
        o.status.success(),
        "hf_parity.py {args:?} with transformers {hf:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The logits transformers gives the reference batch of `dir` with the model in `hf_dir`
/// (loaded by `from_pretrained`, which must find every tensor).
fn transformers_logits(hf: Hf, dir: &Path, hf_dir: &Path) -> Tensor {
    let out = dir.join("transformers-logits.safetensors");
    run_script(
        hf,
        &[
            "logits",
            hf_dir.to_str().unwrap(),
            dir.join("reference.safetensors").to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    read(&out).remove("logits").unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("conveyor-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Named = BTreeMap<String, Tensor>;

fn read(path: &Path) -> Named {
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

fn max_abs(a: &Tensor) -> f64 {
    a.abs().max().double_value(&[])
}

/// Teacher-forced logits of the reference batch (eval mode).
fn logits(m: &Seq2Seq, r: &Named) -> Tensor {
    let _g = tch::no_grad_guard();
    let enc = m.encode(&r["inputs"], &r["input_mask"], false);
    let dec_in = m.shift_right(&r["targets"], None);
    m.logits(&m.decode(&dec_in, &enc, &r["input_mask"], false))
}

fn var(m: &Imported, name: &str) -> Tensor {
    m.vs.variables()[name].shallow_clone()
}

/// The variables in name order, sharing storage with the model.
fn named_vars(m: &Imported) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// (a) logits from one file, from shards and from bfloat16 weights; (b) greedy decoding.
fn check_forward(variant: &str, dir: &Path, r: &Named) -> f64 {
    let m = load(&dir.join("hf")).unwrap();
    let ours = logits(&m.model, r);
    let d = max_diff(&ours, &r["logits"]);
    assert!(d <= 1e-4, "{variant}: logits differ by {d}");
    assert!(dir.join("hf-sharded/model.safetensors.index.json").exists());
    let sharded = load(&dir.join("hf-sharded")).unwrap();
    assert!(logits(&sharded.model, r).equal(&ours), "{variant}: shards");
    // bfloat16 files widen to float32: each weight is the float32 one rounded to bfloat16.
    let bf16 = load(&dir.join("hf-bf16")).unwrap();
    for (name, t) in named_vars(&bf16) {
        let want = var(&m, &name).to_kind(Kind::BFloat16).to_kind(Kind::Float);
        assert!(t.equal(&want), "{variant}: {name} from bfloat16");
    }
    // generate() starts with the decoder start id and pads after EOS.
    let got = m.model.greedy(&r["inputs"], &r["input_mask"], 8, 1);
    let want = r["generated"].narrow(1, 1, r["generated"].size()[1] - 1);
    for (row, g) in got.iter().enumerate() {
        let w: Vec<i64> = Vec::try_from(want.get(row as i64)).unwrap();
        let end = w.iter().position(|&t| t == 1).map_or(w.len(), |p| p + 1);
        assert_eq!(&g[..end.min(g.len())], &w[..end], "{variant}: row {row}");
    }
    d
}

/// The training-mode loss of the reference batch, backpropagated.
fn backward(m: &Imported, r: &Named) -> f64 {
    let loss = m.model.loss(
        &r["inputs"],
        &r["input_mask"],
        &r["targets"],
        &r["target_mask"],
        true,
    );
    loss.backward();
    loss.double_value(&[])
}

/// (d) loss and gradients of a training step, then the weights and the updates of two
/// Adafactor steps (the second with beta2 < 1); returns the largest gradient and weight
/// differences.
fn check_training(variant: &str, dir: &Path, r: &Named) -> (f64, f64) {
    let m = load(&dir.join("hf")).unwrap();
    let loss = backward(&m, r);
    let want = r["loss"].double_value(&[0]);
    assert!(
        (loss - want).abs() <= 1e-4,
        "{variant}: loss {loss} vs {want}"
    );
    let named = named_vars(&m);
    let hf = |prefix: &str, name: &str| &r[&format!("{prefix}/{}", hf_name(name).unwrap())];
    let mut params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let (mut worst_grad, mut worst_weight) = (0f64, 0f64);
    // transformers' Adafactor factors every matrix (T5's keeps small ones full).
    let mut opt = Optimizer::new(
        OptimizerKind::adafactor_hf(),
        Schedule::Constant { lr: 1e-3 },
        &params,
    );
    for (step, prefix) in [(1, "updated"), (2, "updated2")] {
        if step == 2 {
            params.iter().for_each(crate::cuda::clear_grad);
            backward(&m, r);
        }
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
        if step == 1 {
            for ((name, _), g) in named.iter().zip(&grads) {
                let d = max_diff(g, hf("grad", name));
                assert!(d <= 1e-4, "{variant}: gradient of {name} differs by {d}");
                worst_grad = worst_grad.max(d);
            }
        }
        let before: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
        opt.step(&mut params, &grads);
        let previous = if step == 1 { "" } else { "updated" };
        for ((name, p), b) in named.iter().zip(&before) {
            let want = hf(prefix, name);
            let d = max_diff(p, want);
            assert!(
                d <= 1e-5,
                "{variant}: {name} after step {step} differs by {d}"
            );
            worst_weight = worst_weight.max(d);
            // The update itself, to 1% of its size: a wrong rule (clipping, scaling, decay)
            // moves it by far more, even where the weights differ by less than 1e-5.
            let theirs = match previous {
                "" => want - b,
                _ => want - hf(previous, name),
            };
            let d = max_diff(&(p - b), &theirs);
            assert!(
                d <= 1e-2 * max_abs(&theirs) + 1e-9,
                "{variant}: the update of {name} at step {step} differs by {d}"
            );
        }
    }
    (worst_grad, worst_weight)
}

/// (c) transformers loads the export and gives conveyor's logits.
fn check_export(hf: Hf, variant: &str, dir: &Path, r: &Named) -> f64 {
    let m = load(&dir.join("hf")).unwrap();
    let ckpt = dir.join("ckpt");
    import(&dir.join("hf"), &ckpt).unwrap();
    export(&ckpt, &dir.join("exported"), None).unwrap();
    let theirs = transformers_logits(hf, dir, &dir.join("exported"));
    let d = max_diff(&theirs, &logits(&m.model, r));
    assert!(d <= 1e-4, "{variant}: exported logits differ by {d}");
    d
}

/// The checks can fail: each of these mistakes, made in conveyor's model, moves the logits
/// far past the tolerance.
fn check_sabotage(variant: &str, dir: &Path, r: &Named) {
    let _g = tch::no_grad_guard();
    let broken = |what: &str, m: &Seq2Seq| {
        let d = max_diff(&logits(m, r), &r["logits"]);
        assert!(d > 1e-2, "{variant}: {what} went unnoticed ({d})");
    };
    let m = load(&dir.join("hf")).unwrap();
    let (mut q, mut k) = (
        var(&m, "encoder.layers.1.mixer.q.weight"),
        var(&m, "encoder.layers.1.mixer.k.weight"),
    );
    let q0 = q.copy();
    q.copy_(&k);
    k.copy_(&q0);
    broken("swapping q and k", &m.model);
    // A layer lost: its sublayers add nothing to the residual stream.
    let m = load(&dir.join("hf")).unwrap();
    let last = m.config.decoder_layers - 1;
    for w in ["mixer.o", "cross.o", "ffn.wo"] {
        let _ = var(&m, &format!("decoder.layers.{last}.{w}.weight")).zero_();
    }
    broken("losing a layer", &m.model);
    // The logits scaling read wrongly: the same weights, scaled where they were not or not
    // where they were.
    let m = load(&dir.join("hf")).unwrap();
    let mut cfg = m.config.clone();
    cfg.scale_logits = Some(!m.config.scaled_logits());
    let vs = nn::VarStore::new(Device::Cpu);
    let flipped = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    for (name, mut t) in vs.variables() {
        t.copy_(&var(&m, &name));
    }
    broken("flipping the logits scaling", &flipped);
}

/// A folder `name` holding a v1.1 model transformers 4 made with `seed` (`hf/`) and its
/// reference batch, logits and steps (read).
fn v1_1_reference(name: &str, seed: &str) -> (PathBuf, Named) {
    let dir = tmp(name);
    run_script(
        Hf::V4,
        &[
            "make",
            dir.to_str().unwrap(),
            "--variant",
            "v1.1",
            "--seed",
            seed,
        ],
    );
    let r = read(&dir.join("reference.safetensors"));
    (dir, r)
}

/// Every check on a model transformers `hf` made for `variant`; returns the configuration
/// conveyor read from it.
fn check_variant(hf: Hf, variant: &str) -> ModelConfig {
    let dir = tmp(&format!("{variant}-{hf:?}"));
    let d = dir.to_str().unwrap();
    run_script(hf, &["make", d, "--variant", variant, "--seed", "3"]);
    let r = read(&dir.join("reference.safetensors"));
    let logits = check_forward(variant, &dir, &r);
    let (grads, weights) = check_training(variant, &dir, &r);
    let exported = check_export(hf, variant, &dir, &r);
    check_sabotage(variant, &dir, &r);
    eprintln!(
        "{variant}, transformers {hf:?}: largest differences from transformers: logits {logits:.1e}, gradients {grads:.1e}, weights after Adafactor {weights:.1e}, exported logits {exported:.1e}"
    );
    let cfg = read_config(&dir.join("hf")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    cfg
}

#[test]
fn t5_v1_0_matches_transformers() {
    let _rng = crate::test_rng();
    let cfg = check_variant(Hf::V4, "v1.0");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (true, true));
}

#[test]
fn t5_v1_1_matches_transformers() {
    let _rng = crate::test_rng();
    let cfg = check_variant(Hf::V4, "v1.1");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (false, false));
}

#[test]
fn a_wider_t5_v1_0_matches_transformers() {
    let _rng = crate::test_rng();
    check_variant(Hf::V4, "v1.0-wide");
}

/// transformers 5 writes its own configs (`tie_word_embeddings` always true,
/// `scale_decoder_outputs` beside it) and makes a v1.1 model whose head is the embedding
/// without scaling: conveyor reads, trains and exports both versions' models exactly.
#[test]
fn t5_models_of_transformers_5_match_it() {
    let _rng = crate::test_rng();
    let cfg = check_variant(Hf::V5, "v1.0");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (true, true));
    let cfg = check_variant(Hf::V5, "v1.1");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (true, false));
}

/// mT5: transformers 4 makes the head separate (its config says untied), 5 ties it (its
/// config says tied, as it does for every mT5); neither scales the logits.
#[test]
fn mt5_models_of_transformers_4_and_5_match_them() {
    let _rng = crate::test_rng();
    let cfg = check_variant(Hf::V4, "mt5");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (false, false));
    let cfg = check_variant(Hf::V5, "mt5");
    assert_eq!((cfg.tie_embeddings, cfg.scaled_logits()), (true, false));
}

/// A v1.1 model of transformers 4 (a separate head, as google's v1.1 and flan-T5 checkpoints)
/// loaded and saved again by transformers 5, as after fine-tuning there: its config says
/// tied, its files hold the separate head, and the logits are transformers 4's.
#[test]
fn a_v1_1_model_saved_again_by_transformers_5_keeps_its_head() {
    let _rng = crate::test_rng();
    let (dir, r) = v1_1_reference("resaved", "4");
    let resaved = dir.join("resaved");
    let hf = dir.join("hf");
    run_script(
        Hf::V5,
        &["resave", hf.to_str().unwrap(), resaved.to_str().unwrap()],
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(resaved.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            &written["tie_word_embeddings"],
            &written["scale_decoder_outputs"]
        ),
        (&serde_json::json!(true), &serde_json::json!(false)),
        "transformers 5's form"
    );
    let m = load(&resaved).unwrap();
    assert_eq!(
        (m.config.tie_embeddings, m.config.scaled_logits()),
        (false, false)
    );
    let ours = logits(&m.model, &r);
    let d = max_diff(&ours, &r["logits"]);
    assert!(d <= 1e-4, "logits differ from transformers 4's by {d}");
    let d = max_diff(&ours, &transformers_logits(Hf::V5, &dir, &resaved));
    assert!(d <= 1e-4, "logits differ from transformers 5's by {d}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Random weights, norms included, for a checkpoint conveyor made itself.
fn random_checkpoint(cfg: &ModelConfig, ckpt: &Path, seed: i64) -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(&vs.root(), cfg).unwrap();
    let _g = tch::no_grad_guard();
    for (name, mut t) in vs.variables() {
        if name.contains("norm") {
            let _ = t.uniform_(0.5, 1.5);
        }
    }
    crate::checkpoint::write_files(ckpt, &vs, cfg, &[], &initial_state()).unwrap();
    (vs, model)
}

/// A conveyor-trained shape (random conveyor weights, not an import) exports to a folder
/// transformers gives conveyor's logits with.
#[test]
fn a_conveyor_model_exports_to_transformers() {
    let _rng = crate::test_rng();
    let (dir, r) = v1_1_reference("native", "5");
    let mut cfg = read_config(&dir.join("hf")).unwrap();
    cfg.d_kv = Some(12);
    let ckpt = dir.join("ckpt");
    let (_vs, model) = random_checkpoint(&cfg, &ckpt, 11);
    // The fixture vocabulary's pieces and extra ids need more rows than this model has.
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vocab/fixture.model");
    let e = export(&ckpt, &dir.join("exported"), Some(&vocab)).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    assert!(!dir.join("exported").exists());
    export(&ckpt, &dir.join("exported"), None).unwrap();
    let theirs = transformers_logits(Hf::V4, &dir, &dir.join("exported"));
    let d = max_diff(&theirs, &logits(&model, &r));
    assert!(d <= 1e-4, "exported logits differ by {d}");
    // The folder is written once: a second export into it is refused.
    let e = export(&ckpt, &dir.join("exported"), None).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The two kinds of head T5's config cannot name (tied with unscaled logits, separate with
/// scaled ones) export as untied T5 folders that transformers 4 and 5 both give conveyor's
/// logits with.
#[test]
fn heads_t5_cannot_name_export_with_their_logits() {
    let _rng = crate::test_rng();
    let (dir, r) = v1_1_reference("heads", "6");
    for tie in [true, false] {
        let mut cfg = read_config(&dir.join("hf")).unwrap();
        cfg.tie_embeddings = tie;
        cfg.scale_logits = Some(!tie);
        let ckpt = dir.join(format!("ckpt-{tie}"));
        let (_vs, model) = random_checkpoint(&cfg, &ckpt, 13);
        let out = dir.join(format!("exported-{tie}"));
        export(&ckpt, &out, None).unwrap();
        let ours = logits(&model, &r);
        for hf in [Hf::V4, Hf::V5] {
            let d = max_diff(&transformers_logits(hf, &dir, &out), &ours);
            assert!(
                d <= 1e-4,
                "tied {tie}, transformers {hf:?}: logits differ by {d}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Convolutional models leave and come back through the same folder layout, every tensor
/// equal; an export into an empty folder fills it.
#[test]
fn conv_models_round_trip_through_the_folder_layout() {
    let _rng = crate::test_rng();
    let dir = tmp("conv");
    for arch in [Arch::Lightconv, Arch::Dynamicconv, Arch::Dilatedconv] {
        let mut cfg = ModelConfig::preset(arch, "tiny", 120).unwrap();
        cfg.ffn = crate::config::Ffn::GatedGelu;
        let ckpt = dir.join(format!("{}-ckpt", arch.name()));
        let (vs, _model) = random_checkpoint(&cfg, &ckpt, 2);
        let out = dir.join(format!("{}-hf", arch.name()));
        std::fs::create_dir_all(&out).unwrap();
        export(&ckpt, &out, None).unwrap();
        let back = load(&out).unwrap();
        assert_eq!(back.config, cfg);
        let theirs = back.vs.variables();
        for (name, t) in vs.variables() {
            assert!(theirs[&name].equal(&t), "{}: {name}", arch.name());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder whose files hold the stacks' copies of the embedding and no `shared.weight`
/// (transformers ties them and loads it) imports with that embedding.
#[test]
fn embeddings_saved_as_the_stacks_copies_import() {
    let _rng = crate::test_rng();
    let dir = tmp("stack-copies");
    let cfg = ModelConfig::preset(Arch::Transformer, "tiny", 120).unwrap();
    let (vs, _model) = random_checkpoint(&cfg, &dir.join("ckpt"), 3);
    let out = dir.join("hf");
    export(&dir.join("ckpt"), &out, None).unwrap();
    let file = out.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&file).unwrap();
    let at = tensors
        .iter()
        .position(|(n, _)| n == "shared.weight")
        .unwrap();
    let (_, shared) = tensors.remove(at);
    for name in names::TIED_COPIES {
        tensors.push((name.to_string(), shared.copy()));
    }
    Tensor::write_safetensors(&tensors, &file).unwrap();
    let back = load(&out).unwrap();
    let theirs = back.vs.variables();
    for (name, t) in vs.variables() {
        assert!(theirs[&name].equal(&t), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
