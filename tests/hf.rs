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

/// One training step of the tiny transformer on `data` into `run` (checkpoint step 1).
fn one_tiny_step(data: &std::path::Path, run: &std::path::Path) {
    ok(&[
        "train",
        "--data",
        s(data),
        "--out",
        s(run),
        "--arch",
        "transformer",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--inputs-length",
        "64",
        "--device",
        "cpu",
        "-q",
    ]);
}

/// A hostile Hugging Face folder is named before a model is built from it: integer weights
/// (they were cast to floats of their bit patterns' values: loss NaN), ids outside the
/// vocabulary (a panic inside libtorch later), a FIFO for a file (a hang), a damaged
/// safetensors file (a raw reader error). An empty --out is filled, not replaced (it lost
/// its permissions).
#[test]
fn hostile_hugging_face_folders_are_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp_dir("hf-hostile");
    let run = dir.join("run");
    one_tiny_step(c4_tokens(), &run);
    let vocab = shared("spiece/t5-spiece.model");
    let hf = dir.join("hf");
    let step = run.join("checkpoints/step-00000001");
    ok(&[
        "model",
        "export-hf",
        s(&step),
        "--out",
        s(&hf),
        "--vocab",
        s(&vocab),
    ]);
    // A vocabulary of SentencePiece's layout (</s> 2, no <pad>) that fits the model is not
    // exported as T5's (its config says EOS 1): refused, naming the ids; T5's layout passes.
    let small = dir.join("small");
    let spm = dir.join("spm");
    let tokens = dir.join("tokens");
    let corpus = crate::common::root().join("fixtures/corpus");
    ok(&[
        "vocab",
        "train",
        s(&corpus),
        "--out",
        s(&spm),
        "--vocab-size",
        "400",
        "--layout",
        "spm",
    ]);
    ok(&[
        "ingest",
        s(&corpus),
        "--vocab",
        s(&spm.with_extension("model")),
        "--out",
        s(&tokens),
        "-q",
    ]);
    one_tiny_step(&tokens, &small);
    let step1 = small.join("checkpoints/step-00000001");
    let export = |out: &str, vocab: &std::path::Path| {
        let args = ["model", "export-hf", s(&step1), "--out"];
        conveyor(&[&args[..], &[s(&dir.join(out)), "--vocab", s(vocab)]].concat())
    };
    let o = export("hf-spm", &spm.with_extension("model"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("</s> is id 2") && err.contains("--layout spm"),
        "{err}"
    );
    assert!(!dir.join("hf-spm").exists());
    // A T5-layout vocabulary of the same size is another vocabulary: its tokenizer would
    // give ids that stand for other pieces (a T5-layout export: tests/checkpoints.rs).
    let o = export(
        "hf-t5",
        &crate::common::root().join("fixtures/vocab/fixture.model"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trained on data of another vocabulary"),
        "{err}"
    );

    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    ok(&["model", "import-hf", s(&hf), "--out", s(&empty)]);
    let mode = std::fs::metadata(&empty).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the user's folder was replaced");
    assert!(empty.join("model.safetensors").exists());

    // Each case: a copy of the export with one thing changed, refused with these words.
    let case = |name: &str, change: &dyn Fn(&std::path::Path), words: &[&str]| {
        let bad = dir.join(name);
        std::fs::create_dir(&bad).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(hf.join(f), bad.join(f)).unwrap();
        }
        change(&bad);
        let mut child = conveyor_cmd()
            .args([
                "model",
                "import-hf",
                s(&bad),
                "--out",
                s(&dir.join(format!("{name}-out"))),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed().as_secs() > 60 {
                child.kill().unwrap();
                panic!("{name}: import-hf hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: imported");
        for w in words {
            assert!(err.contains(w), "{name}: no {w:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
    };
    let edit_config = |key: &'static str, value: serde_json::Value| {
        move |d: &std::path::Path| {
            let p = d.join("config.json");
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v[key] = value.clone();
            std::fs::write(&p, v.to_string()).unwrap();
        }
    };
    // The same bytes declared as 32-bit integers (the header keeps its length).
    case(
        "ints",
        &|d| {
            let p = d.join("model.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let header = String::from_utf8(b[8..8 + n].to_vec()).unwrap();
            b[8..8 + n].copy_from_slice(header.replace("\"F32\"", "\"I32\"").as_bytes());
            std::fs::write(&p, b).unwrap();
        },
        &["not floating point weights"],
    );
    case(
        "start-id",
        &edit_config("decoder_start_token_id", 1_000_000.into()),
        &["config.json", "decoder_start_id 1000000"],
    );
    case(
        "distance",
        &edit_config("relative_attention_max_distance", (1u64 << 63).into()),
        &["relative_max_distance"],
    );
    case(
        "fifo",
        &|d| {
            std::fs::remove_file(d.join("config.json")).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(d.join("config.json"))
                .status()
                .unwrap();
            assert!(made.success());
        },
        &["config.json", "not a regular file"],
    );
    case(
        "cut",
        &|d| {
            let p = d.join("model.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        },
        &[
            "model.safetensors",
            "not a readable safetensors file",
            "download it again",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
