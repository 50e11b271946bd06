//! The main job: `conveyor demo` runs the whole flow on generated fixtures and writes the
//! report, the same numbers on every run.

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_runs_end_to_end_and_repeats_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("conveyor-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_conveyor"))
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
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    for row in [
        "transformer, no pre-training",
        "lightconv, no pre-training",
        "transformer, pre-trained",
        "lightconv, pre-trained",
        "gain from pre-training",
    ] {
        assert!(report.contains(row), "{report}");
    }
    assert!(out.join("report/report.json").exists());
    assert!(out.join("report/loss-curves.png").exists(), "{stdout}");
    // Every run is seeded: the table is the same again.
    let again = out.join("again");
    let o = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .current_dir(&root)
        .args(["demo", "--out", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(again.join("report/report.md")).unwrap(),
        report
    );
}
