//! What reaches the terminal: control characters from files escaped, a closed output pipe
//! ending the command quietly.

use super::sandbox::*;
use crate::common::{self, c4_tokens, ok};

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `conveyor inspect DIR | head -0`: the reader is gone before the first line.
    for args in [
        vec!["inspect", c4_tokens().to_str().unwrap()],
        vec![
            "model",
            "summary",
            "--arch",
            "transformer",
            "--preset",
            "tiny",
        ],
    ] {
        let mut child = crate::common::conveyor_cmd()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(141) && err.is_empty(),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

#[test]
fn control_characters_from_files_reach_the_terminal_escaped() {
    let sb = Sandbox::new("escapes");
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\nfake line";
    let raw = |out: &str| out.contains('\u{1b}') || out.contains('\u{7}');
    // A manifest's fields, shown by inspect.
    let tokens = sb.tokens("tokens");
    let m = tokens.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    v["job"] = evil.into();
    v["created_by"] = evil.into();
    std::fs::write(&m, v.to_string()).unwrap();
    let shown = ok(&["inspect", s(&tokens), "--docs", "0"]);
    assert!(!raw(&shown) && shown.contains("\\u{1b}[2J"), "{shown}");
    // A task file's description and labels, shown by task show.
    let spec = sb.work.join("spec.toml");
    let esc = "\\u001b[2J";
    std::fs::write(
        &spec,
        format!("name = \"my_sst2\"\ndescription = \"{esc} about\"\nformat = \"tsv\"\nheader = true\ninput_template = \"sst2 sentence: {{sentence}}\"\nlabel_column = \"label\"\nmetric = \"accuracy\"\n[label_map]\n\"0\" = \"neg{esc}\"\n\"1\" = \"positive\"\n"),
    )
    .unwrap();
    let shown = ok(&["task", "show", "my_sst2", "--task-file", s(&spec)]);
    assert!(
        !raw(&shown) && shown.contains("\\u{1b}[2J about"),
        "{shown}"
    );
    // A name from a file in an error message.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    v["shards"][0]["file"] = format!("{evil}.parquet").into();
    std::fs::write(&m, v.to_string()).unwrap();
    let o = common::conveyor(&["inspect", s(&tokens), "--verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && !raw(&err) && err.contains("\\u{1b}[2J"),
        "{err}"
    );
    // A file name with a line break, from a folder listing, in the messages about it: on
    // the name's line, not a line of its own (messages keep their own line breaks).
    let corpus = sb.work.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("x\nerror: none, all read.json.gz"), b"not gzip").unwrap();
    let vocab = common::root().join("fixtures/vocab/fixture.model");
    let out = sb.work.join("o");
    let o = common::conveyor(&["ingest", s(&corpus), "--vocab", s(&vocab), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && !err.lines().any(|l| l.starts_with("error: none"))
            && err.contains("x\\u{a}error: none, all read.json.gz"),
        "{err}"
    );
    sb.assert_outside_unchanged();
}
