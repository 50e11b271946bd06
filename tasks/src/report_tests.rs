//! Tests of the report: rows, columns, gains over seeds, refusals of forged inputs.

use super::*;

fn eval_dir(root: &Path, name: &str, arch: &str, init: bool, task: &str, scores: &str) -> PathBuf {
    let run = root.join(format!("run-{name}"));
    let ckpt = run.join("checkpoints/step-00000010");
    std::fs::create_dir_all(&ckpt).unwrap();
    // A run.json as early versions wrote it: the report needs no more.
    let init = if init { "\"pre/ckpt\"" } else { "null" };
    std::fs::write(
        run.join("run.json"),
        format!(r#"{{"arch": "{arch}", "init": {init}}}"#),
    )
    .unwrap();
    let e = root.join(format!("eval-{name}"));
    std::fs::create_dir_all(&e).unwrap();
    std::fs::write(
        e.join("metrics.json"),
        format!(
            r#"{{"task": "{task}", "checkpoint": "{}", "scores": {scores}}}"#,
            ckpt.display()
        ),
    )
    .unwrap();
    e
}

/// A forged run.json or metrics.json cannot put rows or numbers into the table.
#[test]
fn forged_names_scores_and_tasks_are_refused() {
    let root = std::env::temp_dir().join(format!("conveyor-report-forged-{}", std::process::id()));
    let ok = r#"{"examples": 10, "accuracy": 0.5, "invalid": 0}"#;
    let cases = [
        (
            "row",
            r"evil | 99.99 |\n| fake row",
            "sst2",
            ok,
            "not a plain name",
        ),
        (
            "score",
            "lightconv",
            "sst2",
            r#"{"examples": 10, "accuracy": 7.0, "invalid": 0}"#,
            "the score 7",
        ),
    ];
    for (name, arch, task, scores, words) in cases {
        let e = eval_dir(&root, name, arch, false, task, scores);
        let err = report(&[e]).unwrap_err().to_string();
        assert!(err.contains(words), "{name}: {err}");
    }
    // A mistyped path is named as missing, not as a folder without evaluations.
    let err = report(&[root.join("no-such-eval")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-eval: does not exist"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Evaluations of one task on other splits (another dev set, another --limit) are refused:
/// the table would compare models on different examples under one majority row.
#[test]
fn evaluations_of_other_splits_are_refused() {
    let root = std::env::temp_dir().join(format!("conveyor-report-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dev = r#"{"examples": 20, "accuracy": 0.5, "invalid": 0, "majority": 0.7}"#;
    let a = eval_dir(&root, "a", "transformer", false, "sst2", dev);
    let b = eval_dir(&root, "b", "transformer", true, "sst2", dev);
    assert_eq!(report(&[a.clone(), b]).unwrap().rows.len(), 2);
    for (name, scores) in [
        (
            "other-limit",
            r#"{"examples": 5000, "accuracy": 0.6, "invalid": 0, "majority": 0.7}"#,
        ),
        (
            "other-set",
            r#"{"examples": 20, "accuracy": 0.6, "invalid": 0, "majority": 0.4}"#,
        ),
    ] {
        let c = eval_dir(&root, name, "transformer", true, "sst2", scores);
        let err = report(&[a.clone(), c]).unwrap_err().to_string();
        assert!(
            err.contains("a report compares models on one split") && err.contains("eval-a"),
            "{name}: {err}"
        );
    }
    // A metrics.json from before examples and majority were recorded is not compared by them.
    let old = eval_dir(
        &root,
        "old",
        "lightconv",
        true,
        "sst2",
        r#"{"accuracy": 0.6}"#,
    );
    assert_eq!(report(&[a.clone(), old]).unwrap().rows.len(), 2);
    // COGS's dev and gen sets evaluated apart fill two columns: each column one split.
    let cogs = |name: &str, n: usize, cats: &str| {
        let scores = format!(r#"{{"examples": {n}, "accuracy": 0.5, "per_category": {cats}}}"#);
        eval_dir(&root, name, "transformer", false, "cogs", &scores)
    };
    let dev = cogs("cogs-dev", 300, r#"{"in_distribution": 0.9}"#);
    let gen = cogs("cogs-gen", 2100, r#"{"x": 0.2, "y": 0.4}"#);
    let r = report(&[dev, gen]).unwrap();
    assert!((r.rows[0].scores["COGS gen"] - 30.0).abs() < 1e-9);
    std::fs::remove_dir_all(&root).unwrap();
}

/// An evaluation that recorded its run is placed by that record: its run folder (or the
/// working folder its checkpoint path was relative to) may be gone; a forged record is
/// refused as a forged run.json is.
#[test]
fn recorded_runs_need_no_run_folder() {
    let root =
        std::env::temp_dir().join(format!("conveyor-report-recorded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let scores = r#"{"examples": 10, "accuracy": 0.75, "invalid": 0}"#;
    let with_record = |name: &str, arch: &str, init: &str| {
        let e = root.join(name);
        std::fs::create_dir_all(&e).unwrap();
        let run = format!(r#"{{"arch": "{arch}", "init": {init}, "seed": 3}}"#);
        std::fs::write(
            e.join("metrics.json"),
            format!(
                r#"{{"task": "sst2", "checkpoint": "gone/checkpoints/step-00000010", "scores": {scores}, "run": {run}}}"#
            ),
        )
        .unwrap();
        e
    };
    let r = report(&[
        with_record("a", "dilatedconv", "null"),
        with_record("b", "dilatedconv", "\"pre/ckpt\""),
    ])
    .unwrap();
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|r| (r.arch.as_str(), r.pretrained, r.scores["SST-2"]))
        .collect();
    assert_eq!(
        rows,
        [("dilatedconv", false, 75.0), ("dilatedconv", true, 75.0)]
    );
    // Without the record, the same file needs the run folder its checkpoint names.
    let bare = eval_dir(&root, "c", "dilatedconv", false, "sst2", scores);
    std::fs::remove_dir_all(root.join("run-c")).unwrap();
    let err = report(&[bare]).unwrap_err().to_string();
    assert!(
        err.contains("does not come from a conveyor run folder"),
        "{err}"
    );
    let err = report(&[with_record("d", "x | 99 |", "null")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a plain name"), "{err}");
    // Nor a checkpoint outside a run's checkpoints/ (an imported model): not placed by a
    // run.json in the working folder (it was, through an empty run path).
    let e = root.join("e");
    std::fs::create_dir_all(&e).unwrap();
    std::fs::write(
        e.join("metrics.json"),
        format!(r#"{{"task": "sst2", "checkpoint": "t5", "scores": {scores}}}"#),
    )
    .unwrap();
    let err = report(&[e]).unwrap_err().to_string();
    assert!(
        err.contains("t5: missing") && err.contains("does not come from a conveyor run folder"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn rows_columns_and_gains() {
    let root = std::env::temp_dir().join(format!("conveyor-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let evals = vec![
        eval_dir(
            &root,
            "a",
            "lightconv",
            false,
            "civil_comments",
            r#"{"accuracy": 0.75, "f1": 0.5}"#,
        ),
        eval_dir(
            &root,
            "b",
            "lightconv",
            true,
            "civil_comments",
            r#"{"accuracy": 0.8, "f1": 0.625}"#,
        ),
        eval_dir(
            &root,
            "c",
            "transformer",
            true,
            "cogs",
            r#"{"accuracy": 0.5, "per_category": {"in_distribution": 0.9, "x": 0.2, "y": 0.4}}"#,
        ),
    ];
    let r = report(&evals).unwrap();
    assert_eq!(r.rows.len(), 3);
    // No pre-training first, then pre-trained; architectures in the order they first
    // appear among the inputs.
    let order: Vec<_> = r
        .rows
        .iter()
        .map(|r| (r.arch.as_str(), r.pretrained))
        .collect();
    assert_eq!(
        order,
        [
            ("lightconv", false),
            ("lightconv", true),
            ("transformer", true)
        ]
    );
    assert_eq!(r.rows[1].scores["Civil F1"], 62.5);
    assert!((r.rows[2].scores["COGS gen"] - 30.0).abs() < 1e-9);
    // The COGS column is the in-distribution category, not the mixed overall score.
    assert!((r.rows[2].scores["COGS"] - 90.0).abs() < 1e-9);
    // The other order of inputs puts the transformer first among the pre-trained rows.
    let mut reversed = evals.clone();
    reversed.reverse();
    let r2 = report(&reversed).unwrap();
    assert_eq!(
        (r2.rows[1].arch.as_str(), r2.rows[2].arch.as_str()),
        ("transformer", "lightconv")
    );
    assert!((r.gains["lightconv"]["Civil acc"] - 5.0).abs() < 1e-9);
    assert!((r.gains["lightconv"]["Civil F1"] - 12.5).abs() < 1e-9);
    assert!(
        r.markdown
            .contains("| lightconv, pre-trained | 80.00 | 62.50 | — | — |"),
        "{}",
        r.markdown
    );
    assert!(
        r.markdown.contains("| lightconv | +5.00 | +12.50 |"),
        "{}",
        r.markdown
    );
}

/// An SST-2 evaluation of a run with a seed.
fn seeded(root: &Path, arch: &str, init: bool, seed: u64, accuracy: f64) -> PathBuf {
    let name = format!("{arch}-{init}-{seed}");
    let e = eval_dir(
        root,
        &name,
        arch,
        init,
        "sst2",
        &format!(r#"{{"accuracy": {accuracy}, "majority": 0.5}}"#),
    );
    let run = root.join(format!("run-{name}"));
    let init = if init { "\"pre/ckpt\"" } else { "null" };
    std::fs::write(
        run.join("run.json"),
        format!(r#"{{"arch": "{arch}", "init": {init}, "seed": {seed}}}"#),
    )
    .unwrap();
    e
}

#[test]
fn seeds_give_mean_sd_and_paired_gains() {
    let root = std::env::temp_dir().join(format!("conveyor-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut evals = Vec::new();
    // transformer: 70/72/74 from scratch, 80/81/85 pre-trained (gains 10, 9, 11);
    // lightconv: 70/75/80 and 71/74/82 (gains 1, -1, 2: not separated from zero).
    for (seed, (a, b, c, d)) in [
        (70., 80., 70., 71.),
        (72., 81., 75., 74.),
        (74., 85., 80., 82.),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = seed as u64;
        evals.push(seeded(&root, "transformer", false, seed, a / 100.0));
        evals.push(seeded(&root, "transformer", true, seed, b / 100.0));
        evals.push(seeded(&root, "lightconv", false, seed, c / 100.0));
        evals.push(seeded(&root, "lightconv", true, seed, d / 100.0));
    }
    let r = report(&evals).unwrap();
    let t = &r.rows[0];
    assert_eq!((t.arch.as_str(), t.pretrained), ("transformer", false));
    assert!((t.scores["SST-2"] - 72.0).abs() < 1e-9);
    assert!((t.sd["SST-2"] - 2.0).abs() < 1e-9);
    assert_eq!(t.per_seed["SST-2"].len(), 3);
    assert!((r.gains["transformer"]["SST-2"] - 10.0).abs() < 1e-9);
    assert!((r.gain_sd["transformer"]["SST-2"] - 1.0).abs() < 1e-9);
    assert_eq!(r.majority["SST-2"], 50.0);
    let md = &r.markdown;
    assert!(md.contains("| majority class | 50.00 |"), "{md}");
    assert!(
        md.contains("| transformer, no pre-training | 72.00 ± 2.00 |"),
        "{md}"
    );
    // 95% intervals: 10 ± 4.303 / sqrt(3) and 0.67 ± 4.303 * 1.53 / sqrt(3).
    assert!((r.gain_ci95["transformer"]["SST-2"] - 2.484).abs() < 1e-3);
    assert!(
        md.contains("| transformer | +10.00 ± 1.00 [+7.52, +12.48] |"),
        "{md}"
    );
    assert!(
        md.contains("| lightconv | +0.67 ± 1.53 [-3.13, +4.46] (n.s.) |"),
        "{md}"
    );
    // A second evaluation of the same cell and seed is refused, naming both.
    let again = seeded(&root.join("again"), "lightconv", true, 2, 0.5);
    evals.push(again);
    let e = report(&evals).unwrap_err().to_string();
    assert!(e.contains("same cell") && e.contains("seed 2,"), "{e}");
    // Two checkpoints of one run (a study's learning curve) are named as such.
    evals.pop();
    let run = root.join("run-lightconv-true-2");
    let later = root.join("eval-later");
    std::fs::create_dir_all(&later).unwrap();
    let ckpt = run.join("checkpoints/step-00000020");
    std::fs::write(
        later.join("metrics.json"),
        format!(
            r#"{{"task": "sst2", "checkpoint": "{}", "scores": {{"accuracy": 0.9, "majority": 0.5}}}}"#,
            ckpt.display()
        ),
    )
    .unwrap();
    evals.push(later);
    let e = report(&evals).unwrap_err().to_string();
    assert!(
        e.contains("evaluates another checkpoint of the run")
            && e.contains("pass the evaluation of one checkpoint per run"),
        "{e}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// An evaluation of COGS's generalisation set alone fills COGS gen, not the in-distribution
/// column (its overall score stood there).
#[test]
fn a_generalisation_set_alone_is_not_in_distribution() {
    let root = std::env::temp_dir().join(format!("conveyor-report-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let e = eval_dir(
        &root,
        "g",
        "transformer",
        false,
        "cogs",
        r#"{"accuracy": 0.3, "per_category": {"subj_to_obj": 0.2, "prim_to_subj": 0.4}}"#,
    );
    let r = report(&[e]).unwrap();
    assert!((r.rows[0].scores["COGS gen"] - 30.0).abs() < 1e-9);
    assert!(
        !r.rows[0].scores.contains_key("COGS"),
        "{:?}",
        r.rows[0].scores
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Rows that share no seed have no pairs: the gain is the difference of their means, without
/// a spread (they were paired by position).
#[test]
fn rows_without_a_shared_seed_gain_the_difference_of_means() {
    let root = std::env::temp_dir().join(format!("conveyor-unpaired-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let evals = vec![
        seeded(&root, "lightconv", false, 0, 0.70),
        seeded(&root, "lightconv", false, 1, 0.74),
        seeded(&root, "lightconv", true, 2, 0.80),
        seeded(&root, "lightconv", true, 3, 0.90),
    ];
    let r = report(&evals).unwrap();
    // (0.80 + 0.90) / 2 - (0.70 + 0.74) / 2, in percent; pairs by position gave 13 ± 4.2.
    assert!(
        (r.gains["lightconv"]["SST-2"] - 13.0).abs() < 1e-9,
        "{:?}",
        r.gains
    );
    assert!(!r.gain_sd.contains_key("lightconv"), "{:?}", r.gain_sd);
    std::fs::remove_dir_all(&root).unwrap();
}
