//! The main job: `conveyor demo` writes a study file for generated fixtures, runs it end to
//! end and writes the report, the same numbers on every run.

use crate::common::{root, tmp_path};

#[test]
fn the_demo_runs_end_to_end_and_repeats_itself() {
    let root = root();
    let out = tmp_path("demo");
    let o = crate::common::conveyor_cmd()
        .current_dir(&root)
        .args(["demo", "--out", out.to_str().unwrap()])
        .output()
        .expect("run conveyor demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "transformer, no pre-training",
        "lightconv, no pre-training",
        "transformer, pre-trained",
        "lightconv, pre-trained",
        "gain from pre-training",
    ] {
        assert!(report.contains(row), "{report}");
    }
    assert!(out.join("report.json").exists());
    // The flow is a study: its file is in the folder and `conveyor study` reruns it.
    assert!(out.join("demo.toml").exists());
    assert!(out.join("loss-curves.png").exists(), "{stdout}");
    // Every run is seeded: the table is the same again.
    let again = out.join("again");
    let o = crate::common::conveyor_cmd()
        .current_dir(&root)
        .args(["demo", "--out", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(again.join("report.md")).unwrap(),
        report
    );
    // The study it wrote reruns with `conveyor study`, redoing no training or evaluation.
    let o = crate::common::conveyor_cmd()
        .current_dir(&root)
        .arg("study")
        .arg(out.join("demo.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    let redone: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("[cell") && !l.ends_with("(done before)"))
        .filter(|l| !l.contains("prepare"))
        .collect();
    assert!(redone.is_empty(), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );
}
