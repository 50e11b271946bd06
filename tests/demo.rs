//! The main job: `conveyor demo` writes a study file for generated fixtures, runs it end to
//! end and writes the report, the same numbers on every run.

use crate::common::{conveyor, ok, root, tmp_path};

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
    // The study it wrote reruns with `conveyor study` from any folder, redoing nothing.
    let o = crate::common::conveyor_cmd()
        .current_dir(std::env::temp_dir())
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
        .collect();
    assert!(redone.is_empty(), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );
    // The demo again with the same flags resumes too; with other flags it is refused before
    // any work, since the runner would take the finished runs for the new settings.
    let stdout = ok(&["demo", "--out", out.to_str().unwrap()]);
    assert!(
        stdout.contains("pre-train lightconv seed 0 (done before)"),
        "{stdout}"
    );
    let o = conveyor(&["demo", "--out", out.to_str().unwrap(), "--device", "auto"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("demo.toml was written for other settings"),
        "{stderr}"
    );
}
