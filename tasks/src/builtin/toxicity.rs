//! Toxicity tasks: Civil Comments (Jigsaw unintended bias) and Wikipedia toxicity (Jigsaw
//! toxic comments). Targets are `toxic` / `non-toxic`; scored by accuracy and F1 of `toxic`.

use std::path::Path;

use super::{clean, example};
use crate::read::{column, file_name, rows, Layout};
use crate::{each_row, Metric, Task, TaskData, TaskError, TaskInfo};

const LABELS: [&str; 2] = ["toxic", "non-toxic"];

fn metric() -> Metric {
    Metric::AccuracyF1 {
        positive: LABELS[0].into(),
    }
}

/// Reads a CSV whose text is in the first of `text_cols` and whose label comes from the
/// columns `label_cols` picks, shared by both tasks.
fn read_csv(
    task: &dyn Task,
    path: &Path,
    text_cols: &[&str],
    strict: bool,
    out: &mut TaskData,
    label_cols: impl Fn(&[String]) -> Option<Vec<usize>>,
    toxic: impl Fn(&[&str]) -> Result<bool, String>,
) -> Result<(), TaskError> {
    let (header, rows) = rows(path, Layout::CSV)?;
    let text = column(&header, text_cols)
        .ok_or_else(|| task.format_error(path, "no comment text column".into()))?;
    let cols =
        label_cols(&header).ok_or_else(|| task.format_error(path, "no label column".into()))?;
    let file = file_name(path);
    let name = task.name();
    each_row(task, path, rows, None, strict, out, |line, row, out| {
        let values: Option<Vec<&str>> = cols
            .iter()
            .map(|&c| row.get(c).map(String::as_str))
            .collect();
        let (Some(values), Some(t)) = (values, row.get(text)) else {
            return out.skip(&file, line, "missing field".into(), strict);
        };
        match toxic(&values) {
            Ok(is) => {
                let inputs = format!("{name} comment: {}", clean(t));
                let target = LABELS[usize::from(!is)];
                out.examples
                    .push(example(inputs, target, None, &file, line));
                Ok(())
            }
            Err(reason) => out.skip(&file, line, reason, strict),
        }
    })
}

/// Civil Comments: the Kaggle unintended-bias CSVs, `comment_text` with `target` (train) or
/// `toxicity` (expanded test files), a fraction of raters; toxic when >= 0.5. Also the
/// TFDS / Hugging Face Parquet export (`text` and `toxicity` columns).
pub struct CivilComments;

impl CivilComments {
    fn read_parquet(&self, path: &Path, out: &mut TaskData) -> Result<(), TaskError> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType, Float32Type, Float64Type};
        let bad = |e: &dyn std::fmt::Display| self.format_error(path, e.to_string());
        let file = std::fs::File::open(path).map_err(|e| crate::read::io_error(path, e))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| bad(&e))?;
        let name = file_name(path);
        let mut line = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| bad(&e))?;
            let find = |names: &[&str]| names.iter().find_map(|n| batch.column_by_name(n).cloned());
            let text = find(&["text", "comment_text"]).ok_or_else(|| bad(&"no text column"))?;
            let tox = find(&["toxicity", "target"]).ok_or_else(|| bad(&"no toxicity column"))?;
            let text = text
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(&"text is not a string column"))?;
            let value = |i: usize| -> Option<f64> {
                if tox.is_null(i) {
                    return None;
                }
                match tox.data_type() {
                    DataType::Float32 => Some(tox.as_primitive::<Float32Type>().value(i) as f64),
                    DataType::Float64 => Some(tox.as_primitive::<Float64Type>().value(i)),
                    _ => None,
                }
            };
            for i in 0..batch.num_rows() {
                line += 1;
                out.read += 1;
                match (value(i), text.is_null(i)) {
                    (Some(v), false) => {
                        let inputs = format!("civil_comments comment: {}", clean(text.value(i)));
                        let target = LABELS[usize::from(v < 0.5)];
                        out.examples
                            .push(example(inputs, target, None, &name, line));
                    }
                    _ => out.skip(&name, line, "missing text or toxicity".into(), false)?,
                }
            }
        }
        Ok(())
    }
}

impl Task for CivilComments {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "civil_comments".into(),
            description: "Civil Comments (Jigsaw unintended bias), toxic when target/toxicity >= 0.5; accuracy, F1".into(),
            formats: "a Jigsaw unintended-bias CSV with comment_text and target (or toxicity) columns, or the TFDS/HF Parquet export (text, toxicity)".into(),
            labels: super::owned(&LABELS),
            metric: metric(),
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        if path.extension().is_some_and(|e| e == "parquet") {
            return self.read_parquet(path, out);
        }
        read_csv(
            self,
            path,
            &["comment_text", "text"],
            strict,
            out,
            |h| column(h, &["target", "toxicity"]).map(|c| vec![c]),
            |v| {
                v[0].trim()
                    .parse::<f64>()
                    .map(|x| x >= 0.5)
                    .map_err(|_| format!("toxicity {:?} is not a number", v[0]))
            },
        )
    }
}

/// Wikipedia toxicity: the Jigsaw toxic-comment CSV (`comment_text` and six 0/1 labels);
/// a comment is toxic when its `toxic` label is 1, as in TFDS's wikipedia_toxicity_subtypes
/// (the paper's source), whose `toxicity` is that column (the subtypes are its other
/// features; a comment with a subtype but not `toxic`, 1 of the 27 positives a union gave in
/// the shared sample, is not toxic there).
/// Also the Wulczyn et al. layout: `toxicity_annotated_comments.tsv` (rev_id, comment, ...)
/// with `toxicity_annotations.tsv` beside it (rev_id, worker_id, toxicity 0/1, ...); a
/// comment is toxic when at least half of its annotators said so.
pub struct WikiToxicity;

impl WikiToxicity {
    fn read_wulczyn(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let notes = path.with_file_name("toxicity_annotations.tsv");
        if !notes.exists() {
            return Err(self.format_error(
                path,
                format!("the Wulczyn layout needs {} beside it", notes.display()),
            ));
        }
        let (h, rows_) = rows(&notes, Layout::TSV)?;
        let (Some(id), Some(tox)) = (column(&h, &["rev_id"]), column(&h, &["toxicity"])) else {
            return Err(self.format_error(&notes, "no rev_id/toxicity header".into()));
        };
        let mut votes: std::collections::HashMap<String, (u32, u32)> = Default::default();
        for (_, row) in rows_ {
            let Ok(row) = row else { continue };
            if let (Some(k), Some(v)) = (row.get(id), row.get(tox)) {
                let e = votes.entry(k.trim().to_string()).or_default();
                e.0 += u32::from(v.trim().parse::<f64>().is_ok_and(|x| x >= 0.5));
                e.1 += 1;
            }
        }
        let (header, rows) = rows(path, Layout::TSV)?;
        let (Some(id), Some(text)) = (column(&header, &["rev_id"]), column(&header, &["comment"]))
        else {
            return Err(self.format_error(path, "no rev_id/comment header".into()));
        };
        let file = file_name(path);
        each_row(self, path, rows, None, strict, out, |line, row, out| {
            let (Some(k), Some(t)) = (row.get(id), row.get(text)) else {
                return out.skip(&file, line, "missing field".into(), strict);
            };
            let Some(&(yes, all)) = votes.get(k.trim()) else {
                return out.skip(
                    &file,
                    line,
                    format!("rev_id {k} has no annotations"),
                    strict,
                );
            };
            let t = t.replace("NEWLINE_TOKEN", " ").replace("TAB_TOKEN", " ");
            let inputs = format!("wiki_toxicity comment: {}", clean(&t));
            let target = LABELS[usize::from(2 * yes < all)];
            out.examples
                .push(example(inputs, target, None, &file, line));
            Ok(())
        })
    }
}

impl Task for WikiToxicity {
    /// 1: toxic by the `toxic` column alone (it was any of the six labels).
    fn revision(&self) -> u32 {
        1
    }

    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "wiki_toxicity".into(),
            description: "Wikipedia talk comments (Jigsaw toxic comments), toxic when the toxic label is 1 (TFDS wikipedia_toxicity_subtypes); accuracy, F1".into(),
            formats: "the Jigsaw toxic-comment CSV with comment_text and the label column toxic (the subtype columns beside it are not read); or Wulczyn et al.'s toxicity_annotated_comments.tsv with toxicity_annotations.tsv beside it".into(),
            labels: super::owned(&LABELS),
            metric: metric(),
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        if path.extension().is_some_and(|e| e == "tsv") {
            return self.read_wulczyn(path, strict, out);
        }
        read_csv(
            self,
            path,
            &["comment_text", "comment"],
            strict,
            out,
            |h| column(h, &["toxic"]).map(|c| vec![c]),
            |v| match v[0].trim() {
                "1" => Ok(true),
                "0" => Ok(false),
                other => Err(format!("label {other:?} is not 0 or 1")),
            },
        )
    }
}
