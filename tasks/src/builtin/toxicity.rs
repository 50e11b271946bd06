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
/// `toxicity` (expanded test files), a fraction of raters; toxic when >= 0.5.
pub struct CivilComments;

impl Task for CivilComments {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "civil_comments".into(),
            description: "Civil Comments (Jigsaw unintended bias), toxic when target/toxicity >= 0.5; accuracy, F1".into(),
            formats: "a Jigsaw unintended-bias CSV with comment_text and target (or toxicity) columns".into(),
            labels: super::owned(&LABELS),
            metric: metric(),
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
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
/// a comment is toxic when any of the six labels is 1 (with only a `toxic` column, that one).
pub struct WikiToxicity;

const SIX: [&str; 6] = [
    "toxic",
    "severe_toxic",
    "obscene",
    "threat",
    "insult",
    "identity_hate",
];

impl Task for WikiToxicity {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "wiki_toxicity".into(),
            description: "Wikipedia talk comments (Jigsaw toxic comments), toxic when any of the six labels is 1; accuracy, F1".into(),
            formats: "the Jigsaw toxic-comment CSV with comment_text and the label columns toxic, severe_toxic, obscene, threat, insult, identity_hate".into(),
            labels: super::owned(&LABELS),
            metric: metric(),
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        read_csv(
            self,
            path,
            &["comment_text", "comment"],
            strict,
            out,
            |h| {
                let cols: Vec<usize> = SIX.iter().filter_map(|n| column(h, &[n])).collect();
                (!cols.is_empty()).then_some(cols)
            },
            |v| {
                let mut any = false;
                for x in v {
                    match x.trim() {
                        "1" => any = true,
                        "0" => {}
                        other => return Err(format!("label {other:?} is not 0 or 1")),
                    }
                }
                Ok(any)
            },
        )
    }
}
