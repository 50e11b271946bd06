//! A task's inputs as unlabeled text for pre-training: the rows on the training side of the
//! same seeded split `prepare --holdout` makes, so text a model is evaluated on never reaches
//! its pre-training corpus. Written as JSON lines `{"text": ...}`, one of the ingest's
//! formats. The text is the task's formatted input (prefix included, label never).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::prepare::Holdout;
use crate::{read_all, Task, TaskError};

/// The formatted inputs of every example on the training side of `holdout` (all examples
/// without one), in file order.
pub fn training_texts(
    task: &dyn Task,
    inputs: &[PathBuf],
    strict: bool,
    holdout: Option<Holdout>,
) -> Result<Vec<String>, TaskError> {
    // Read file by file and concatenated, as prepare does: the split is drawn by position.
    let mut examples = Vec::new();
    for p in inputs {
        examples.extend(read_all(task, std::slice::from_ref(p), strict)?.examples);
    }
    let train_side = holdout.map(|h| Holdout {
        keep_held_out: false,
        ..h
    });
    let kept = match train_side {
        Some(h) => h.keep(examples),
        None => examples,
    };
    Ok(kept.into_iter().map(|e| e.inputs).collect())
}

/// Writes `texts` as JSON lines to `out` through a temporary sibling renamed into place, so
/// an interrupted write never leaves a partial file under the final name.
pub fn write_jsonl(texts: &[String], out: &Path) -> Result<(), TaskError> {
    let io = |e: std::io::Error| TaskError::Io {
        path: out.to_path_buf(),
        message: e.to_string(),
    };
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let tmp = out.with_file_name(name);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for t in texts {
        let line = serde_json::json!({ "text": t });
        writeln!(w, "{line}").map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::{prepare, PrepareConfig};

    /// The `inputs_pretokenized` column of every shard in a prepared folder, in order.
    fn pretokenized_inputs(dir: &Path) -> Vec<String> {
        use arrow::array::AsArray;
        let m = conveyor_pipeline::examples::ExamplesManifest::read(dir).unwrap();
        let mut texts = Vec::new();
        for s in &m.shards {
            let f = std::fs::File::open(dir.join(&s.file)).unwrap();
            let r =
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 1024).unwrap();
            for b in r {
                let b = b.unwrap();
                let col = b.column_by_name("inputs_pretokenized").unwrap();
                texts.extend(
                    col.as_string::<i32>()
                        .iter()
                        .map(|t| t.unwrap().to_string()),
                );
            }
        }
        texts
    }

    fn sst2_file(dir: &Path, rows: usize) -> PathBuf {
        let mut s = String::from("sentence\tlabel\n");
        for i in 0..rows {
            s.push_str(&format!("review number {i} of the film\t{}\n", i % 2));
        }
        let f = dir.join("train.tsv");
        std::fs::write(&f, s).unwrap();
        f
    }

    /// The texts are exactly the inputs of the examples `prepare` writes for the train
    /// split (in read order), and none of the dev split's: pre-training never sees an evaluation row.
    #[test]
    fn texts_are_the_train_side_of_prepares_split() {
        let dir = std::env::temp_dir().join(format!("conveyor-texts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = sst2_file(&dir, 200);
        let task = crate::resolve("sst2", None).unwrap();
        let h = Holdout::of(0.2, true);
        let texts =
            training_texts(task.as_ref(), std::slice::from_ref(&input), false, Some(h)).unwrap();
        let vocab =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/spiece/t5-spiece.model");
        let mut sides = Vec::new();
        for (split, keep) in [("train", false), ("dev", true)] {
            let out = dir.join(split);
            let cfg = PrepareConfig {
                inputs: vec![input.clone()],
                vocab: vocab.clone(),
                out: out.clone(),
                split: split.into(),
                inputs_length: Some(32),
                targets_length: Some(4),
                extra_ids: 100,
                strict: false,
                overwrite: false,
                holdout: Some(Holdout {
                    keep_held_out: keep,
                    ..h
                }),
                worker: None,
            };
            prepare(task.as_ref(), &cfg).unwrap();
            sides.push(pretokenized_inputs(&out));
        }
        // The same rows (prepare writes them in a seeded random order).
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(sorted(&texts), sorted(&sides[0]));
        assert!(!sides[1].is_empty() && sides[1].iter().all(|d| !texts.contains(d)));
        assert_eq!(texts.len() + sides[1].len(), 200);
        let f = dir.join("texts.jsonl");
        write_jsonl(&texts, &f).unwrap();
        let back: Vec<String> = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(back, texts);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
