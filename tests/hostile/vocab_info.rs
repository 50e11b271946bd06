//! A token manifest's `vocab` fields against the vocabulary they describe: sentinels are
//! numbered down from `vocab.size`, so an edited size would turn real pieces into sentinels.

use super::sandbox::*;
use crate::common::ok;

#[test]
fn an_edited_vocabulary_size_is_named_not_used() {
    let sb = Sandbox::new("vocab-info");
    let out = sb.work.join("ex");
    let args = |tokens: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "corrupt".to_string(),
            s(tokens).into(),
            "--out".into(),
            s(&out).into(),
        ];
        a.extend(["--inputs-length", "32", "--vocab", &vocab()].map(String::from));
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    for (field, value) in [("size", 31000u64), ("size", u64::MAX), ("eos_id", 5)] {
        let tokens = sb.tokens(&format!("tokens-{field}-{value}"));
        edit_json(&tokens.join("manifest.json"), |m| {
            m["vocab"][field] = value.into()
        });
        let a = args(&tokens, &[]);
        fails(
            &refs(&a),
            &[
                "manifest.json",
                &format!("vocab.{field} is {}", value),
                "re-ingest",
            ],
        );
        assert!(!out.exists());
    }
    // Without --vocab the size is checked against every token id: a size cut to 1,000 is
    // named with the shard and row (real ids above it would have become sentinels).
    let tokens = sb.tokens("tokens-small");
    edit_json(&tokens.join("manifest.json"), |m| {
        m["vocab"]["size"] = 1000.into()
    });
    let mut a = args(&tokens, &[]);
    a.truncate(a.len() - 2);
    fails(
        &refs(&a),
        &[
            ".parquet",
            "not below the vocabulary size 1000",
            "re-ingest",
        ],
    );
    assert!(!out.join("manifest.json").exists());
    // The failed job's unfinished work goes before the next case.
    std::fs::remove_dir_all(&out).unwrap();
    // Extra ids past 32 bits: refused, not wrapped around.
    let tokens = sb.tokens("tokens");
    let a = args(&tokens, &["--extra-ids", "4294967295"]);
    fails(&refs(&a), &["extra ids", "32-bit"]);
    ok(&refs(&args(&tokens, &[])));
    sb.assert_outside_unchanged();
}
