//! Sentiment tasks: IMDb reviews, GLUE SST-2 sentences, Sentiment140 tweets. Targets are
//! `negative` / `positive`.

use std::path::Path;

use super::{clean, example, unknown_label};
use crate::read::{column, file_name, io_error, rows, Layout};
use crate::{each_row, Metric, Task, TaskData, TaskError, TaskInfo};

const LABELS: [&str; 2] = ["negative", "positive"];

fn info(name: &'static str, description: &'static str, formats: &'static str) -> TaskInfo {
    TaskInfo {
        name: name.into(),
        description: description.into(),
        formats: formats.into(),
        labels: super::owned(&LABELS),
        metric: Metric::Accuracy,
    }
}

/// A CSV/TSV layout with a header holding a label column and a text column.
struct Labelled {
    layout: Layout,
    label_cols: &'static [&'static str],
    text_cols: &'static [&'static str],
    target: fn(&str) -> Option<&'static str>,
    /// The valid raw labels, for the unknown-label error.
    valid: &'static str,
    inputs: fn(&str) -> String,
}

impl Labelled {
    fn read(
        &self,
        task: &dyn Task,
        path: &Path,
        strict: bool,
        out: &mut TaskData,
    ) -> Result<(), TaskError> {
        let (header, rows) = rows(path, self.layout)?;
        let (Some(l), Some(t)) = (
            column(&header, self.label_cols),
            column(&header, self.text_cols),
        ) else {
            return Err(task.format_error(path, "no label/text header".into()));
        };
        let file = file_name(path);
        each_row(task, path, rows, None, strict, out, |line, row, out| {
            let (Some(label), Some(raw)) = (row.get(l), row.get(t)) else {
                return out.skip(&file, line, "missing field".into(), strict);
            };
            let target = (self.target)(label.trim())
                .ok_or_else(|| unknown_label(task, &file, line, label.trim(), self.valid))?;
            out.examples
                .push(example((self.inputs)(raw), target, None, &file, line));
            Ok(())
        })
    }
}

/// GLUE SST-2: `sentence<TAB>label` with a header, label 0/1.
pub struct Sst2;

impl Task for Sst2 {
    fn info(&self) -> TaskInfo {
        info(
            "sst2",
            "GLUE SST-2 movie-review sentences, negative/positive; accuracy",
            "GLUE TSV with header `sentence<TAB>label` (label 0 or 1)",
        )
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        Labelled {
            layout: Layout::TSV,
            label_cols: &["label"],
            text_cols: &["sentence"],
            target: |l| match l {
                "0" => Some("negative"),
                "1" => Some("positive"),
                _ => None,
            },
            valid: "0, 1",
            inputs: |t| format!("sst2 sentence: {}", clean(t)),
        }
        .read(self, path, strict, out)
    }
}

/// IMDb: the aclImdb tree (`pos/` and `neg/` folders of .txt reviews, searched below the
/// given folder) or a CSV export with `label` and `text` columns.
pub struct Imdb;

fn imdb_label(raw: &str) -> Option<&'static str> {
    match raw.to_ascii_lowercase().as_str() {
        "negative" | "neg" | "0" => Some("negative"),
        "positive" | "pos" | "1" => Some("positive"),
        _ => None,
    }
}

fn imdb_text(raw: &str) -> String {
    format!("imdb review: {}", clean(&raw.replace("<br />", " ")))
}

impl Imdb {
    fn read_tree(&self, dir: &Path, out: &mut TaskData) -> Result<(), TaskError> {
        let list = |d: &Path| -> Result<Vec<std::path::PathBuf>, TaskError> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .map_err(|e| io_error(d, e))?
                .flatten()
                .map(|e| e.path())
                .collect();
            v.sort();
            Ok(v)
        };
        let mut found = false;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for p in list(&d)?.into_iter().filter(|p| p.is_dir()) {
                let name = file_name(&p);
                let Some(target) = (name == "pos" || name == "neg")
                    .then(|| imdb_label(&name))
                    .flatten()
                else {
                    stack.push(p);
                    continue;
                };
                found = true;
                for f in list(&p)?
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|x| x == "txt"))
                {
                    out.read += 1;
                    let text = std::fs::read_to_string(&f).map_err(|e| io_error(&f, e))?;
                    out.examples
                        .push(example(imdb_text(&text), target, None, &file_name(&f), 1));
                }
            }
        }
        if !found {
            return Err(self.format_error(dir, "no pos/ or neg/ folder".into()));
        }
        Ok(())
    }
}

impl Task for Imdb {
    fn info(&self) -> TaskInfo {
        info(
            "imdb",
            "IMDb movie reviews, negative/positive; accuracy",
            "the aclImdb folder tree (pos/ and neg/ .txt files) or a CSV with label and text columns",
        )
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        if path.is_dir() {
            return self.read_tree(path, out);
        }
        Labelled {
            layout: Layout::CSV,
            label_cols: &["label", "sentiment"],
            text_cols: &["text", "review"],
            target: imdb_label,
            valid: "negative, positive (or neg/pos, 0/1)",
            inputs: imdb_text,
        }
        .read(self, path, strict, out)
    }
}

/// Sentiment140: the 6-column CSV (polarity 0/2/4, id, date, query, user, text). Neutral
/// tweets (2) are left out of this binary task, as in the paper, and counted.
pub struct Sentiment140;

impl Task for Sentiment140 {
    /// 1: latin-1 (tweets with accented letters were skipped).
    fn revision(&self) -> u32 {
        1
    }

    fn info(&self) -> TaskInfo {
        info(
            "sentiment140",
            "Sentiment140 tweets, negative/positive (neutral dropped); accuracy",
            "the 6-column latin-1 CSV without header: polarity (0/2/4), id, date, query, user, text",
        )
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        // The 1.6 M training file is latin-1 (a UTF-8 reading skipped every tweet with an
        // accented letter); the test file is ASCII, which reads the same either way.
        let (_, rows) = rows(path, Layout::CSV_NO_HEADER.latin1())?;
        let file = file_name(path);
        each_row(self, path, rows, Some(6), strict, out, |line, row, out| {
            let target = match row[0].trim() {
                "0" => "negative",
                "4" => "positive",
                "2" => {
                    out.exclude("neutral");
                    return Ok(());
                }
                other => return Err(unknown_label(self, &file, line, other, "0, 2 (dropped), 4")),
            };
            let inputs = format!("sentiment140 tweet: {}", clean(&row[5]));
            out.examples
                .push(example(inputs, target, None, &file, line));
            Ok(())
        })
    }
}
