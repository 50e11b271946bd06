//! `conveyor study`: a small grid runs end to end and a rerun redoes nothing.

use crate::common::{root, tmp_path};

#[test]
fn a_study_runs_and_resumes_without_redoing_cells() {
    let root = root();
    let out = tmp_path("study");
    let run = || {
        let o = crate::common::conveyor_cmd()
            .current_dir(&root)
            .args([
                "study",
                "studies/smoke.toml",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .expect("run conveyor study");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let first = run();
    assert!(first.contains("[cell 21/21]"), "{first}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| trec | lightconv, pre-trained |"),
        "{report}"
    );
    assert!(report.contains("gain from pre-training"), "{report}");
    // An interrupted cell: remove the last fine-tuning run's final checkpoint.
    let runs = out.join("runs");
    let last = runs.join("trec-lightconv-pretrained-lr0.003-s0");
    std::fs::remove_dir_all(last.join("checkpoints/step-00000020")).unwrap();
    std::fs::write(last.join("checkpoints/latest"), "step-00000000").unwrap();
    let second = run();
    let redone: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with("[cell") && !l.ends_with("(done before)"))
        .collect();
    // Only the damaged fine-tuning cell and its evaluation (whose checkpoint moved) reran:
    // a start and an end line for the training, one line for the evaluation.
    assert_eq!(redone.len(), 3, "{redone:?}");
    assert!(
        redone
            .iter()
            .all(|l| l.contains("lightconv pretrained lr 0.003")),
        "{redone:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );
}
