//! End-to-end: Hugging Face checkpoints through the CLI. A random-weight T5 (v1.0 and v1.1,
//! with Google's 32,128 embedding rows) built by transformers is imported, fine-tuned from,
//! evaluated and exported again, and transformers loads the export with its tokenizer. The
//! numeric parity with transformers is tested in conveyor-model (model/src/hf/tests.rs).

use crate::common::*;

/// scripts/hf_parity.py with the environment's transformers 4, or with transformers 5.
fn python(args: &[&str]) -> String {
    python_with(false, args)
}

fn python_with(transformers5: bool, args: &[&str]) -> String {
    let py = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = std::process::Command::new(py);
    if transformers5 {
        c.env("PYTHONPATH", transformers5_dir());
    }
    let o = c
        .arg(root().join("scripts/hf_parity.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_imported_t5_fine_tunes_evaluates_and_exports() {
    let vocab = shared("spiece/t5-spiece.model");
    let data = tmp_path("ag");
    ok(&[
        "task",
        "prepare",
        "ag_news",
        "--input",
        s(&shared("ag_news/test_rows_0001-6000.csv")),
        "--vocab",
        s(&vocab),
        "--out",
        s(&data),
        "--inputs-length",
        "48",
    ]);
    for variant in ["v1.0", "v1.1"] {
        let dir = tmp_path(variant);
        std::fs::create_dir_all(&dir).unwrap();
        python(&["make", s(&dir), "--variant", variant, "--vocab", "32128"]);
        let ckpt = dir.join("imported");
        let out = ok(&["model", "import-hf", s(&dir.join("hf")), "--out", s(&ckpt)]);
        assert!(out.contains("vocab 32128"), "{out}");
        // Importing into the same folder again is refused: nothing is overwritten.
        let o = conveyor(&["model", "import-hf", s(&dir.join("hf")), "--out", s(&ckpt)]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
        // The import's loss on the task, which the first fine-tuning step should be near
        // (dropout aside): the run starts from the imported weights, not from scratch.
        let loss = ok(&[
            "model",
            "loss",
            "--checkpoint",
            s(&ckpt),
            "--data",
            s(&data),
            "--limit",
            "64",
            "--device",
            "cpu",
            "--json",
        ]);
        let start: serde_json::Value = serde_json::from_str(&loss).unwrap();
        let start = start["loss"].as_f64().unwrap();
        let run = dir.join("run");
        ok(&[
            "finetune",
            "--task",
            "ag_news",
            "--data",
            s(&data),
            "--init",
            s(&ckpt),
            "--out",
            s(&run),
            "--steps",
            "30",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "-q",
        ]);
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["loss"].as_f64())
            .collect();
        assert!(
            losses.len() >= 2 && losses.last() < losses.first(),
            "{variant}: the loss did not fall: {losses:?}"
        );
        assert!(
            (losses[0] - start).abs() < 0.25 * start,
            "{variant}: first step {} vs the import's loss {start}",
            losses[0]
        );
        let step = run.join("checkpoints/step-00000030");
        let eval = ok(&[
            "eval",
            "--checkpoint",
            s(&step),
            "--data",
            s(&data),
            "--out",
            s(&dir.join("eval")),
            "--limit",
            "32",
            "--device",
            "cpu",
        ]);
        let v: serde_json::Value = serde_json::from_str(&eval).unwrap();
        assert_eq!(v["scores"]["examples"], 32, "{variant}: {v}");
        let hf = dir.join("exported");
        ok(&[
            "model",
            "export-hf",
            s(&step),
            "--out",
            s(&hf),
            "--vocab",
            s(&vocab),
        ]);
        // Both transformers load the export, model and tokenizer (transformers 5 converts
        // spiece.model, which needs protobuf), and give the same logits.
        let mut logits = Vec::new();
        for five in [false, true] {
            let out = dir.join(format!("logits-{five}.safetensors"));
            let loaded = python_with(
                five,
                &[
                    "logits",
                    s(&hf),
                    s(&dir.join("reference.safetensors")),
                    s(&out),
                ],
            );
            let loaded: serde_json::Value = serde_json::from_str(&loaded).unwrap();
            assert_eq!(loaded["class"], "T5ForConditionalGeneration");
            // 32,000 pieces and 100 extra ids; "hello world" ends with EOS (id 1).
            assert_eq!(loaded["tokenizer_size"], 32100, "{loaded}");
            assert_eq!(loaded["hello"].as_array().unwrap().last(), Some(&1.into()));
            // The tokenizer transformers builds from the export gives SentencePiece's ids.
            assert_eq!(
                loaded["differs_from_sentencepiece"],
                serde_json::json!([]),
                "{loaded}"
            );
            let mut t = tch::Tensor::read_safetensors(&out).unwrap();
            logits.push(t.remove(0).1);
        }
        let d = (&logits[0] - &logits[1]).abs().max().double_value(&[]);
        assert!(d <= 1e-4, "{variant}: transformers 4 and 5 differ by {d}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn pickled_and_foreign_checkpoints_are_refused_by_name() {
    let dir = tmp_path("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "t5", "d_model": 8, "d_ff": 8, "d_kv": 2, "num_heads": 4, "num_layers": 1, "vocab_size": 10}"#,
    )
    .unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
    let o = conveyor(&["model", "import-hf", s(&dir), "--out", s(&dir.join("out"))]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("pytorch_model.bin") && e.contains("safe_serialization=True"),
        "{e}"
    );
    assert!(!dir.join("out").exists());
    // A shard index that names a file outside the folder.
    std::fs::remove_file(dir.join("pytorch_model.bin")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"shared.weight": "../../etc/passwd"}}"#,
    )
    .unwrap();
    let o = conveyor(&["model", "import-hf", s(&dir), "--out", s(&dir.join("out"))]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("path separator"),
        "{e}"
    );
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "t5", "feed_forward_proj": "gated-silu", "d_model": 8, "d_ff": 8, "d_kv": 2, "num_heads": 4, "num_layers": 1, "vocab_size": 10}"#,
    )
    .unwrap();
    let o = conveyor(&["model", "import-hf", s(&dir), "--out", s(&dir.join("out"))]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("gated-silu"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `model summary --hf-config` counts a checkpoint's parameters from its config.json alone:
/// google/t5-v1_1-base's values give transformers' count.
#[test]
fn summary_counts_a_hugging_face_config() {
    let dir = tmp_path("summary");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_ff": 2048,
            "d_kv": 64, "d_model": 768, "num_heads": 12, "num_layers": 12,
            "num_decoder_layers": 12, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
            "dense_act_fn": "gelu_new", "is_gated_act": true, "tie_word_embeddings": false}"#,
    )
    .unwrap();
    let out = ok(&["model", "summary", "--hf-config", s(&cfg), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["parameters"], 247_577_856);
    std::fs::remove_dir_all(&dir).unwrap();
}
