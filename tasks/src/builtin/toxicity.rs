//! Toxicity tasks: Civil Comments (Jigsaw unintended bias) and Wikipedia toxicity (Jigsaw
//! toxic comments). Targets are `toxic` / `non-toxic`; scored by accuracy and F1 of `toxic`.

use std::path::Path;

use super::{clean, example};
use crate::read::{column, file_name, rows, Layout};
use crate::{Metric, Task, TaskData, TaskError};

const TOXIC: &str = "toxic";
const NON_TOXIC: &str = "non-toxic";

fn labels() -> Option<Vec<String>> {
    Some(vec![TOXIC.into(), NON_TOXIC.into()])
}

fn metric() -> Metric {
    Metric::AccuracyF1 {
        positive: TOXIC.into(),
    }
}

/// Reads a CSV whose text is in `text_cols` and whose label comes from `label` (the row and
/// the header), shared by both tasks.
#[allow(clippy::too_many_arguments)]
fn read_csv(
    task: &str,
    formats: &str,
    path: &Path,
    text_cols: &[&str],
    strict: bool,
    out: &mut TaskData,
    label_cols: impl Fn(&[String]) -> Option<Vec<usize>>,
    label: impl Fn(&[&str]) -> Result<bool, String>,
) -> Result<(), TaskError> {
    let (header, rows) = rows(path, Layout::CSV)?;
    let format_error = |message: &str| TaskError::Format {
        path: path.to_path_buf(),
        task: task.into(),
        expected: formats.into(),
        message: message.into(),
    };
    let text = column(&header, text_cols).ok_or_else(|| format_error("no comment text column"))?;
    let cols = label_cols(&header).ok_or_else(|| format_error("no label column"))?;
    let file = file_name(path);
    for (line, row) in rows {
        out.read += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                out.skip(&file, line, e, strict)?;
                continue;
            }
        };
        let values: Option<Vec<&str>> = cols
            .iter()
            .map(|&c| row.get(c).map(|s| s.as_str()))
            .collect();
        let (Some(values), Some(t)) = (values, row.get(text)) else {
            out.skip(&file, line, "missing field".into(), strict)?;
            continue;
        };
        match label(&values) {
            Ok(toxic) => out.examples.push(example(
                format!("{task} comment: {}", clean(t)),
                if toxic { TOXIC } else { NON_TOXIC },
                None,
                &file,
                line,
            )),
            Err(reason) => out.skip(&file, line, reason, strict)?,
        }
    }
    Ok(())
}

/// Civil Comments: the Kaggle unintended-bias CSVs, `comment_text` with `target` (train) or
/// `toxicity` (expanded test files), a fraction of raters; toxic when >= 0.5.
pub struct CivilComments;

impl Task for CivilComments {
    fn name(&self) -> &str {
        "civil_comments"
    }
    fn description(&self) -> &str {
        "Civil Comments (Jigsaw unintended bias), toxic when target/toxicity >= 0.5; accuracy, F1"
    }
    fn formats(&self) -> &str {
        "a Jigsaw unintended-bias CSV with comment_text and target (or toxicity) columns"
    }
    fn labels(&self) -> Option<Vec<String>> {
        labels()
    }
    fn metric(&self) -> Metric {
        metric()
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        read_csv(
            "civil_comments",
            self.formats(),
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
    fn name(&self) -> &str {
        "wiki_toxicity"
    }
    fn description(&self) -> &str {
        "Wikipedia talk comments (Jigsaw toxic comments), toxic when any of the six labels is 1; accuracy, F1"
    }
    fn formats(&self) -> &str {
        "the Jigsaw toxic-comment CSV with comment_text and the label columns toxic, severe_toxic, obscene, threat, insult, identity_hate"
    }
    fn labels(&self) -> Option<Vec<String>> {
        labels()
    }
    fn metric(&self) -> Metric {
        metric()
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        read_csv(
            "wiki_toxicity",
            self.formats(),
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
