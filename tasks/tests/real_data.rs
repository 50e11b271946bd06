//! Every built-in task on the real files in ../shared/data: row and label counts (counted
//! independently with Python's csv module), formatting, and bad-input handling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conveyor_tasks::{find, read_all, TaskData, TaskError};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn read(task: &str, files: &[&str]) -> TaskData {
    let t = find(task).unwrap();
    let paths: Vec<PathBuf> = files.iter().map(|f| data(f)).collect();
    read_all(t.as_ref(), &paths, false).unwrap()
}

fn label_counts(d: &TaskData) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in &d.examples {
        *m.entry(e.targets.clone()).or_default() += 1;
    }
    m
}

#[test]
fn trec_fine_labels() {
    let d = read("trec", &["trec/train_5500.label"]);
    assert_eq!((d.read, d.examples.len(), d.skipped.len()), (5452, 5452, 0));
    assert_eq!(label_counts(&d)["HUM:ind"], 962);
    let e = &d.examples[0];
    assert_eq!(
        e.inputs,
        "trec question: How did serfdom develop in and then leave Russia ?"
    );
    assert_eq!((e.targets.as_str(), e.line), ("DESC:manner", 1));
}

#[test]
fn ag_news_topics() {
    let d = read("ag_news", &["ag_news/test_rows_0001-6000.csv"]);
    assert_eq!(d.examples.len(), 6000);
    let c = label_counts(&d);
    assert_eq!(
        (c["World"], c["Sports"], c["Business"], c["Sci/Tech"]),
        (1519, 1493, 1470, 1518)
    );
    assert!(d.examples[1].inputs.contains("A second team of rocketeers"));
    assert!(d.examples[0]
        .inputs
        .starts_with("ag_news title: Fears for T N pension after talks description: Unions"));
}

#[test]
fn sentiment_tasks() {
    let d = read("sst2", &["sst2/train.tsv"]);
    assert_eq!(d.examples.len(), 67_349);
    let c = label_counts(&d);
    assert_eq!((c["negative"], c["positive"]), (29_780, 37_569));
    assert_eq!(
        d.examples[0].inputs,
        "sst2 sentence: hide new secretions from the parental units"
    );
    let d = read("imdb", &["imdb/texts_train.csv"]);
    let c = label_counts(&d);
    assert_eq!(
        (d.examples.len(), c["negative"], c["positive"]),
        (800, 417, 383)
    );
    assert!(!d.examples.iter().any(|e| e.inputs.contains("<br />")));
    let d = read(
        "sentiment140",
        &["sentiment140/testdata.manual.2009.06.14.csv"],
    );
    let c = label_counts(&d);
    assert_eq!((d.read, d.examples.len()), (498, 359));
    assert_eq!(
        (c["negative"], c["positive"], d.excluded["neutral"]),
        (177, 182, 139)
    );
    // The training file's latin-1 (its real bytes for "café" and "naïve"): read, not
    // skipped as broken UTF-8.
    let dir = std::env::temp_dir().join(format!("conveyor-s140-latin1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("training.csv");
    let mut text =
        b"\"0\",\"1\",\"Mon Apr 06\",\"NO_QUERY\",\"u\",\"caf\xe9 was na\xefve\"\n".to_vec();
    text.extend_from_slice(b"\"4\",\"2\",\"Mon Apr 06\",\"NO_QUERY\",\"v\",\"plain\"\n");
    std::fs::write(&f, text).unwrap();
    let d = read_all(find("sentiment140").unwrap().as_ref(), &[f], false).unwrap();
    assert_eq!((d.examples.len(), d.skipped.len()), (2, 0));
    assert_eq!(
        d.examples[0].inputs,
        "sentiment140 tweet: caf\u{e9} was na\u{ef}ve"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn toxicity_tasks() {
    let d = read(
        "wiki_toxicity",
        &["wikipedia_toxicity/jigsaw_toxic_train_prefix.csv"],
    );
    assert_eq!(d.examples.len(), 267);
    // The `toxic` column, as TFDS's `toxicity`: 26 (one more row has only a subtype label).
    assert_eq!(label_counts(&d)["toxic"], 26);
    // A comment spanning lines is one example, its line the row's first.
    assert!(d.examples[0]
        .inputs
        .starts_with("wiki_toxicity comment: Explanation Why the edits"));
    let d = read(
        "civil_comments",
        &[
            "civil_comments/kaggle_unintended_bias_first_rows_train.csv",
            "civil_comments/kaggle_unintended_bias_first_rows_test_public_expanded.csv",
            "civil_comments/kaggle_unintended_bias_first_rows_test_private_expanded.csv",
        ],
    );
    assert_eq!(d.examples.len(), 12);
    assert_eq!(label_counts(&d)["toxic"], 1);
    // The test file without labels is refused, saying what was expected.
    let t = find("wiki_toxicity").unwrap();
    let e = read_all(
        t.as_ref(),
        &[data("wikipedia_toxicity/jigsaw_toxic_test_prefix.csv")],
        false,
    )
    .unwrap_err();
    assert!(matches!(e, TaskError::Format { .. }), "{e}");
    assert!(e.to_string().contains("label column toxic"), "{e}");
}

#[test]
fn cogs_with_categories() {
    let d = read("cogs", &["cogs/train.tsv", "cogs/dev.tsv"]);
    assert_eq!(d.examples.len(), 24_155 + 3000);
    let e = &d.examples[0];
    assert_eq!(e.inputs, "cogs: A rose was helped by a dog .");
    assert!(e.targets.starts_with("rose ( x _ 1 ) AND help . theme"));
    assert_eq!(e.category.as_deref(), Some("in_distribution"));
    assert_eq!(d.examples.last().unwrap().file, "dev.tsv");
}

#[test]
fn bad_rows_and_labels() {
    let dir = std::env::temp_dir().join(format!("conveyor-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.csv");
    std::fs::write(
        &f,
        "\"1\",\"t\",\"d\"\n\"2\",\"only two\"\n\"9\",\"t\",\"d\"\n",
    )
    .unwrap();
    let t = find("ag_news").unwrap();
    // An unknown label names the valid ones.
    let e = read_all(t.as_ref(), std::slice::from_ref(&f), false).unwrap_err();
    assert!(
        e.to_string().contains("bad.csv:3") && e.to_string().contains("4 (Sci/Tech)"),
        "{e}"
    );
    // A malformed row is skipped and reported with its line; --strict stops there.
    std::fs::write(
        &f,
        "\"1\",\"t\",\"d\"\n\"2\",\"only two\"\n\"3\",\"t\",\"d\"\n",
    )
    .unwrap();
    let d = read_all(t.as_ref(), std::slice::from_ref(&f), false).unwrap();
    assert_eq!((d.read, d.examples.len()), (3, 2));
    assert_eq!(
        (d.skipped[0].file.as_str(), d.skipped[0].line),
        ("bad.csv", 2)
    );
    let e = read_all(t.as_ref(), std::slice::from_ref(&f), true).unwrap_err();
    assert!(e.to_string().contains("--strict"), "{e}");
    // A file of another task's format says which format was expected.
    let e = read_all(
        find("sst2").unwrap().as_ref(),
        &[data("ag_news/test_rows_0001-6000.csv")],
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("GLUE TSV"), "{e}");
    assert!(find("nope").is_err());
}

#[test]
fn prepared_examples_feed_the_loader() {
    use conveyor_pipeline::loader::{Loader, LoaderConfig, LoaderInput};
    use conveyor_tasks::prepare::{prepare, PrepareConfig};
    let out = std::env::temp_dir().join(format!("conveyor-prepare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = PrepareConfig {
        inputs: vec![data("trec/train_5500.label")],
        vocab: data("spiece/t5-spiece.model"),
        out: out.clone(),
        split: "train".into(),
        inputs_length: None,
        targets_length: None,
        extra_ids: 100,
        strict: false,
        overwrite: false,
        holdout: None,
        worker: None,
    };
    let t = find("trec").unwrap();
    let s = prepare(t.as_ref(), &cfg).unwrap();
    assert_eq!((s.read, s.written), (5452, 5452));
    // 90th-percentile lengths: at most a tenth of the examples are trimmed.
    assert!(s.truncated_inputs <= 546 && s.truncated_inputs > 0, "{s:?}");
    // Labels are never cut: the targets keep the longest label.
    assert_eq!(s.truncated_targets, 0, "{s:?}");
    // Same command again: complete, nothing redone.
    assert!(prepare(t.as_ref(), &cfg).unwrap().already_complete);
    // The loader reads them as examples, every one ending with EOS (1).
    let mut l = LoaderConfig::new(LoaderInput::Examples(out.clone()), 100);
    l.shuffle_buffer = 0;
    l.shuffle_shards = false;
    l.epochs = Some(1);
    let mut n = 0;
    for b in Loader::new(l).unwrap() {
        let b = b.unwrap();
        for r in 0..b.rows {
            let len = b.target_lengths[r] as usize;
            assert_eq!(b.targets[r * b.targets_width + len - 1], 1);
        }
        n += b.rows;
    }
    assert_eq!(n, 5452);
}

#[test]
fn a_toml_task_file_reads_like_the_builtin() {
    let dir = std::env::temp_dir().join(format!("conveyor-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("my_sst2.toml");
    std::fs::write(
        &spec,
        r#"
name = "my_sst2"
format = "tsv"
input_template = "my_sst2 sentence: {sentence}"
label_column = "label"
metric = "accuracy"
[label_map]
"0" = "negative"
"1" = "positive"
"#,
    )
    .unwrap();
    let t = conveyor_tasks::resolve("my_sst2", Some(&spec)).unwrap();
    assert_eq!(t.labels().unwrap(), vec!["negative", "positive"]);
    let d = read_all(t.as_ref(), &[data("sst2/train.tsv")], false).unwrap();
    let builtin = read("sst2", &["sst2/train.tsv"]);
    assert_eq!(d.examples.len(), builtin.examples.len());
    assert_eq!(label_counts(&d), label_counts(&builtin));
    assert_eq!(
        d.examples[0].inputs.replace("my_sst2", "sst2"),
        builtin.examples[0].inputs
    );
    // A bad spec says what is wrong.
    std::fs::write(
        &spec,
        "name = \"x\"\nformat = \"tsv\"\ninput_template = \"{a}\"\nmetric = \"accuracy\"\n",
    )
    .unwrap();
    let e = conveyor_tasks::spec::load(&spec).err().unwrap().to_string();
    assert!(e.contains("label_column with label_map"), "{e}");
    // F1 of a label that is no target (a typo) would be 0 whatever the model did.
    std::fs::write(
        &spec,
        "name = \"x\"\nformat = \"tsv\"\ninput_template = \"{a}\"\nlabel_column = \"label\"\nmetric = \"f1:postive\"\n[label_map]\n\"1\" = \"positive\"\n",
    )
    .unwrap();
    let e = conveyor_tasks::spec::load(&spec).err().unwrap().to_string();
    assert!(e.contains("f1:postive names no target"), "{e}");
    // A space after the colon is not part of the label (F1 was 0 whatever the model did).
    std::fs::write(
        &spec,
        "name = \"x\"\nformat = \"tsv\"\ninput_template = \"{a}\"\nlabel_column = \"label\"\nmetric = \"f1: positive\"\n[label_map]\n\"1\" = \"positive\"\n",
    )
    .unwrap();
    let task = conveyor_tasks::spec::load(&spec).unwrap();
    assert_eq!(
        task.info().metric,
        conveyor_tasks::metric::Metric::AccuracyF1 {
            positive: "positive".into()
        }
    );
    // Nor are spaces around a label or its target: "positive " was a label no output could
    // equal, so every prediction was invalid and F1 0.
    std::fs::write(
        &spec,
        "name = \"x\"\nformat = \"tsv\"\ninput_template = \"{a}\"\nlabel_column = \"label\"\nmetric = \"f1:positive\"\n[label_map]\n\" 1\" = \"positive \"\n\"0\" = \" negative\"\n",
    )
    .unwrap();
    let task = conveyor_tasks::spec::load(&spec).unwrap();
    assert_eq!(task.labels().unwrap(), ["negative", "positive"]);
    let refs = ["positive".to_string(), "negative".into()];
    let scores =
        task.info()
            .metric
            .score(&refs, &refs, &[], &[None, None], task.labels().as_deref());
    assert_eq!((scores.invalid, scores.f1), (0, Some(1.0)));
    for (map, why) in [
        ("\"1\" = \" \"", "empty target"),
        ("\"1\" = \"a\"\n\" 1\" = \"b\"", "twice"),
    ] {
        std::fs::write(&spec, format!("name = \"x\"\nformat = \"tsv\"\ninput_template = \"{{a}}\"\nlabel_column = \"label\"\nmetric = \"accuracy\"\n[label_map]\n{map}\n")).unwrap();
        let e = conveyor_tasks::spec::load(&spec).err().unwrap().to_string();
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn civil_comments_parquet_export() {
    use arrow::array::{Float32Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = std::env::temp_dir().join(format!("conveyor-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, true),
        Field::new("toxicity", DataType::Float32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                Some("you are  great"),
                Some("awful"),
                None,
            ])),
            Arc::new(Float32Array::from(vec![Some(0.1), Some(0.8), Some(0.9)])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let t = find("civil_comments").unwrap();
    let d = read_all(t.as_ref(), &[path], false).unwrap();
    assert_eq!((d.read, d.examples.len(), d.skipped.len()), (3, 2, 1));
    assert_eq!(
        d.examples[0].inputs,
        "civil_comments comment: you are great"
    );
    assert_eq!(
        (
            d.examples[0].targets.as_str(),
            d.examples[1].targets.as_str()
        ),
        ("non-toxic", "toxic")
    );
}

#[test]
fn wikipedia_toxicity_wulczyn_layout() {
    let dir = std::env::temp_dir().join(format!("conveyor-wulczyn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let comments = dir.join("toxicity_annotated_comments.tsv");
    std::fs::write(
        &comments,
        "rev_id\tcomment\tyear\tlogged_in\tns\tsample\tsplit\n\
         1\tfine NEWLINE_TOKENthanks\t2015\tTrue\tarticle\trandom\ttrain\n\
         2\tyou idiot\t2015\tTrue\tuser\trandom\ttrain\n\
         3\tno votes\t2015\tTrue\tuser\trandom\ttest\n",
    )
    .unwrap();
    let t = find("wiki_toxicity").unwrap();
    // Without the annotations file the layout is refused, naming what is missing.
    let e = read_all(t.as_ref(), std::slice::from_ref(&comments), false).unwrap_err();
    assert!(e.to_string().contains("toxicity_annotations.tsv"), "{e}");
    std::fs::write(
        dir.join("toxicity_annotations.tsv"),
        "rev_id\tworker_id\ttoxicity\ttoxicity_score\n1\t7\t0\t1.0\n1\t8\t1\t-1.0\n1\t9\t0\t0.0\n2\t7\t1\t-2.0\n2\t8\t1\t-1.0\n",
    )
    .unwrap();
    let d = read_all(t.as_ref(), &[comments], false).unwrap();
    assert_eq!((d.read, d.examples.len(), d.skipped.len()), (3, 2, 1));
    assert_eq!(d.examples[0].inputs, "wiki_toxicity comment: fine thanks");
    assert_eq!(label_counts(&d)["toxic"], 1);
    assert_eq!(d.examples[0].targets, "non-toxic");
}

#[test]
fn holdout_splits_are_exact_disjoint_and_complete() {
    use conveyor_tasks::prepare::Holdout;
    let h = |keep, seed| Holdout {
        fraction: 0.1,
        seed,
        keep_held_out: keep,
    };
    let rows: Vec<usize> = (0..5003).collect();
    let dev = h(true, 3).keep(rows.clone());
    let train = h(false, 3).keep(rows.clone());
    // round(500.3): exactly, where a coin flip per row gave anything from about 450 to 550.
    assert_eq!((dev.len(), train.len()), (500, 4503));
    let mut both: Vec<usize> = dev.iter().chain(&train).copied().collect();
    both.sort();
    assert_eq!(both, rows, "each row on exactly one side");
    // Seeded by position: the same rows again; another seed holds out others.
    assert_eq!(h(true, 3).keep(rows.clone()), dev);
    let other = h(true, 4).keep(rows.clone());
    assert_eq!(other.len(), 500);
    assert!(other.iter().filter(|i| dev.contains(i)).count() < 150);
    // Spread over the file, not a slice of it.
    assert!(dev.iter().filter(|&&i| i < 2500).count().abs_diff(250) < 60);
    // Small tasks keep a row on each side.
    for n in [2, 3, 7] {
        let held = h(true, 3).keep((0..n).collect::<Vec<_>>()).len();
        assert!(held >= 1 && held < n, "{n} rows: {held} held out");
    }
}
