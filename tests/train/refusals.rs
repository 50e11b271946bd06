//! What `train` refuses before it trains, each refusal with the reason and what to do:
//! other data, architecture, precision, optimiser rule, inputs length, dropout or z-loss on
//! a resume.

use super::*;

#[test]
fn wrong_inputs_are_refused_with_a_reason() {
    let run = tmp_path("refuse");
    let s = run.to_str().unwrap();
    // Not a data directory.
    let mut args = train_args(s, "transformer", "2");
    args[2] = "/";
    let o = conveyor(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("token directory"));
    // A run exists: continuing needs --resume; resuming with another architecture is refused.
    ok(&train_args(s, "transformer", "2"));
    let o = conveyor(&train_args(s, "transformer", "4"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let mut other = train_args(s, "lightconv", "4");
    other.push("--resume");
    let o = conveyor(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("transformer model") && err.contains("lightconv"),
        "{err}"
    );
    // Not with a hint about position embeddings (lightconv's learned table differs from the
    // transformer's none, which the message took for the cause).
    assert!(!err.contains("position_embedding"), "{err}");
    // A run folder where a checkpoint is wanted is named as such, with one to pass.
    let exported = run.join("exported");
    let o = conveyor(&["model", "export-hf", s, "--out", exported.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is a training run's folder") && err.contains("checkpoints/step-00000002"),
        "{err}"
    );
    // Resumed in another precision, the run would not repeat itself: refused, naming it.
    let mut bf16 = train_args(s, "transformer", "4");
    bf16.extend(["--resume", "--bf16"]);
    let o = conveyor(&bf16);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the run trained in f32") && err.contains("neither --bf16"),
        "{err}"
    );
    // Adafactor's factoring rule is part of the run (its moments' shapes): named.
    let mut factored = train_args(s, "transformer", "4");
    factored.extend(["--resume", "--factor-min-dim", "0"]);
    let o = conveyor(&factored);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "was Adafactor (--factor-min-dim 128) and this one is Adafactor (--factor-min-dim 0)"
        ) && err.contains("resume with --factor-min-dim 128"),
        "{err}"
    );
    // Another schedule is named in the flags that chose it (not Rust's debug form).
    let mut constant = train_args(s, "transformer", "4");
    constant.extend(["--resume", "--lr", "0.001"]);
    let err = String::from_utf8_lossy(&conveyor(&constant).stderr).into_owned();
    assert!(
        err.contains("was 1/sqrt(max(step, 10000)) (no --lr, --warmup 10000) and this one is a constant rate (--lr 0.001)"),
        "{err}"
    );
    // The z-loss is part of the run's objective: another is named.
    let mut z = train_args(s, "transformer", "4");
    z.extend(["--resume", "--z-loss", "1e-4"]);
    let o = conveyor(&z);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("trained with --z-loss 0 and this one with 0.0001"),
        "{err}"
    );
    let mut negative = train_args(s, "transformer", "4");
    negative.extend(["--resume", "--z-loss=-1"]);
    let o = conveyor(&negative);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a coefficient"));
    // A run with it: recorded, the same first loss (the logged loss is the cross-entropy),
    // then other weights; resumed without the flag, refused naming it.
    let zrun = run.join("z-loss");
    let zs = zrun.to_str().unwrap();
    let mut first_z = train_args(zs, "transformer", "2");
    first_z.extend(["--z-loss", "0.01"]);
    ok(&first_z);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(zrun.join("checkpoints/step-00000002/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["z_loss"], 0.01);
    let (plain, with_z) = (losses(&run), losses(&zrun));
    assert_eq!(plain[0], with_z[0]);
    assert_ne!(plain[1], with_z[1]);
    let mut again = train_args(zs, "transformer", "4");
    again.push("--resume");
    let err = String::from_utf8_lossy(&conveyor(&again).stderr).into_owned();
    assert!(err.contains("resume with --z-loss 0.01"), "{err}");
    // Another inputs length is named (the loader said only "another data configuration").
    let mut longer = train_args(s, "transformer", "4");
    longer[14] = "32";
    assert_eq!(longer[13], "--inputs-length");
    longer.push("--resume");
    let o = conveyor(&longer);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("at --inputs-length 64 and this one asks for 32"),
        "{err}"
    );
    // Without the flags a resume keeps the run's rule (the study runner passes none) and its
    // inputs length (it asked for the default, 512, and was refused).
    let hf_rule = run.join("hf-rule");
    let h = hf_rule.to_str().unwrap();
    let mut first = train_args(h, "transformer", "2");
    first.extend(["--factor-min-dim", "0"]);
    ok(&first);
    let mut again = train_args(h, "transformer", "4");
    assert_eq!(
        again.drain(13..15).collect::<Vec<_>>(),
        ["--inputs-length", "64"]
    );
    again.push("--resume");
    ok(&again);
    // Another dropout rate is refused on resume (--init may change it; a resume continues).
    let no_dropout = run.join("no-dropout.json");
    std::fs::write(&no_dropout, r#"{"dropout": 0.0}"#).unwrap();
    let mut dropped = train_args(s, "transformer", "4");
    dropped.extend(["--resume", "--config", no_dropout.to_str().unwrap()]);
    let o = conveyor(&dropped);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the run trained with dropout 0.1"), "{err}");
    // Resuming without --arch takes the run's own model (it asked for --arch).
    let mut bare = train_args(s, "transformer", "5");
    bare.drain(5..9);
    bare.push("--resume");
    assert!(!bare.contains(&"--arch"));
    ok(&bare);
    // --init with a preset but no architecture fine-tuned the checkpoint's own model.
    let (sized_out, init) = (run.join("sized"), run.join("checkpoints/step-00000005"));
    let mut sized = train_args(sized_out.to_str().unwrap(), "transformer", "2");
    sized.drain(5..7);
    sized.extend(["--init", init.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&conveyor(&sized).stderr).into_owned();
    assert!(err.contains("--preset tiny with --init"), "{err}");
    // A resume to fewer steps than the run has made trained nothing and exited 0.
    let mut fewer = train_args(s, "transformer", "3");
    fewer.push("--resume");
    let o = conveyor(&fewer);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("the run is at step 5 already, past --steps 3"),
        "{err}"
    );
    // A CUDA graph and the sync check need a CUDA device: refused before anything is written.
    for flag in ["--cuda-graph", "--check-syncs"] {
        let fresh = run.join(flag.trim_start_matches('-'));
        let mut cuda = train_args(fresh.to_str().unwrap(), "transformer", "2");
        cuda.push(flag);
        let o = conveyor(&cuda);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{flag} needs a CUDA device")),
            "{err}"
        );
        assert!(!fresh.exists());
    }
    // AdamW without a rate would take T5's Adafactor schedule as its own (0.01 from step 1);
    // checkpoints every 0 steps would be one every step.
    for (flags, said) in [
        (
            &["--optimizer", "adamw"][..],
            "--optimizer adamw needs --lr",
        ),
        (&["--checkpoint-every", "0"][..], "--checkpoint-every"),
        // Flags the run would have ignored.
        (
            &["--lr", "1e-3", "--warmup", "5"][..],
            "--warmup 5 shapes T5's default schedule",
        ),
        (&["--eval-data", "x"][..], "--eval-every is 0 (never)"),
        (
            &["--eval-every", "1"][..],
            "evaluates --eval-data, which is not given",
        ),
        (&["--eval-batches", "0"][..], "--eval-batches"),
        (
            &[
                "--optimizer",
                "adamw",
                "--lr",
                "1e-4",
                "--factor-min-dim",
                "0",
            ][..],
            "--factor-min-dim 0 is Adafactor's",
        ),
    ] {
        let fresh = run.join("flags");
        let mut args = train_args(fresh.to_str().unwrap(), "transformer", "2");
        args.extend(flags);
        let o = conveyor(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(said), "{err}");
        assert!(!fresh.exists());
    }
    // Impossible shapes.
    let cfg = run.join("bad.json");
    std::fs::write(&cfg, r#"{"d_model": 30, "num_heads": 4}"#).unwrap();
    let mut bad = train_args(s, "transformer", "2");
    bad.extend(["--config", cfg.to_str().unwrap()]);
    let o = conveyor(&bad);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not divisible"));
}
