//! Sentiment tasks: IMDb reviews, GLUE SST-2 sentences, Sentiment140 tweets. Targets are
//! `negative` / `positive`.

use std::path::Path;

use super::{clean, example};
use crate::read::{column, file_name, io_error, rows, Layout};
use crate::{Metric, Task, TaskData, TaskError};

const LABELS: [&str; 2] = ["negative", "positive"];

fn labels() -> Option<Vec<String>> {
    Some(LABELS.iter().map(|s| s.to_string()).collect())
}

fn format_error(path: &Path, task: &str, expected: &str, message: &str) -> TaskError {
    TaskError::Format {
        path: path.to_path_buf(),
        task: task.into(),
        expected: expected.into(),
        message: message.into(),
    }
}

/// GLUE SST-2: `sentence<TAB>label` with a header, label 0/1.
pub struct Sst2;

impl Task for Sst2 {
    fn name(&self) -> &str {
        "sst2"
    }
    fn description(&self) -> &str {
        "GLUE SST-2 movie-review sentences, negative/positive; accuracy"
    }
    fn formats(&self) -> &str {
        "GLUE TSV with header `sentence<TAB>label` (label 0 or 1)"
    }
    fn labels(&self) -> Option<Vec<String>> {
        labels()
    }
    fn metric(&self) -> Metric {
        Metric::Accuracy
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let (header, rows) = rows(path, Layout::TSV)?;
        let (Some(s), Some(l)) = (column(&header, &["sentence"]), column(&header, &["label"]))
        else {
            return Err(format_error(
                path,
                "sst2",
                self.formats(),
                "no sentence/label header",
            ));
        };
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
            let (Some(text), Some(label)) = (row.get(s), row.get(l)) else {
                out.skip(&file, line, "missing field".into(), strict)?;
                continue;
            };
            let target = match label.trim() {
                "0" => "negative",
                "1" => "positive",
                other => {
                    return Err(TaskError::Label {
                        file,
                        line,
                        task: "sst2".into(),
                        label: other.into(),
                        valid: "0, 1".into(),
                    })
                }
            };
            out.examples.push(example(
                format!("sst2 sentence: {}", clean(text)),
                target,
                None,
                &file,
                line,
            ));
        }
        Ok(())
    }
}

/// IMDb: the aclImdb tree (`pos/` and `neg/` folders of .txt reviews, searched below the
/// given folder) or a CSV export with `label` and `text` columns.
pub struct Imdb;

impl Imdb {
    fn label(raw: &str) -> Option<&'static str> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "negative" | "neg" | "0" => Some("negative"),
            "positive" | "pos" | "1" => Some("positive"),
            _ => None,
        }
    }

    fn read_tree(&self, dir: &Path, out: &mut TaskData) -> Result<(), TaskError> {
        let mut found = false;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&d)
                .map_err(|e| io_error(&d, e))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                if !p.is_dir() {
                    continue;
                }
                let name = file_name(&p);
                let Some(target) = (name == "pos" || name == "neg").then(|| Self::label(&name))
                else {
                    stack.push(p);
                    continue;
                };
                found = true;
                let mut files: Vec<_> = std::fs::read_dir(&p)
                    .map_err(|e| io_error(&p, e))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|x| x == "txt"))
                    .collect();
                files.sort();
                for f in files {
                    out.read += 1;
                    let text = std::fs::read_to_string(&f).map_err(|e| io_error(&f, e))?;
                    let text = clean(&text.replace("<br />", " "));
                    out.examples.push(example(
                        format!("imdb review: {text}"),
                        target.expect("pos or neg"),
                        None,
                        &file_name(&f),
                        1,
                    ));
                }
            }
        }
        if !found {
            return Err(format_error(
                dir,
                "imdb",
                self.formats(),
                "no pos/ or neg/ folder",
            ));
        }
        Ok(())
    }
}

impl Task for Imdb {
    fn name(&self) -> &str {
        "imdb"
    }
    fn description(&self) -> &str {
        "IMDb movie reviews, negative/positive; accuracy"
    }
    fn formats(&self) -> &str {
        "the aclImdb folder tree (pos/ and neg/ .txt files) or a CSV with label and text columns"
    }
    fn labels(&self) -> Option<Vec<String>> {
        labels()
    }
    fn metric(&self) -> Metric {
        Metric::Accuracy
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        if path.is_dir() {
            return self.read_tree(path, out);
        }
        let (header, rows) = rows(path, Layout::CSV)?;
        let (Some(l), Some(t)) = (
            column(&header, &["label", "sentiment"]),
            column(&header, &["text", "review"]),
        ) else {
            return Err(format_error(
                path,
                "imdb",
                self.formats(),
                "no label/text header",
            ));
        };
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
            let (Some(label), Some(text)) = (row.get(l), row.get(t)) else {
                out.skip(&file, line, "missing field".into(), strict)?;
                continue;
            };
            let Some(target) = Self::label(label) else {
                return Err(TaskError::Label {
                    file,
                    line,
                    task: "imdb".into(),
                    label: label.into(),
                    valid: "negative, positive (or neg/pos, 0/1)".into(),
                });
            };
            let text = clean(&text.replace("<br />", " "));
            out.examples.push(example(
                format!("imdb review: {text}"),
                target,
                None,
                &file,
                line,
            ));
        }
        Ok(())
    }
}

/// Sentiment140: the 6-column CSV (polarity 0/2/4, id, date, query, user, text). Neutral
/// tweets (2) are left out of this binary task, as in the paper, and counted.
pub struct Sentiment140;

impl Task for Sentiment140 {
    fn name(&self) -> &str {
        "sentiment140"
    }
    fn description(&self) -> &str {
        "Sentiment140 tweets, negative/positive (neutral dropped); accuracy"
    }
    fn formats(&self) -> &str {
        "the 6-column CSV without header: polarity (0/2/4), id, date, query, user, text"
    }
    fn labels(&self) -> Option<Vec<String>> {
        labels()
    }
    fn metric(&self) -> Metric {
        Metric::Accuracy
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let (_, rows) = rows(path, Layout::CSV_NO_HEADER)?;
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
            if row.len() != 6 {
                if out.read == 1 {
                    return Err(format_error(
                        path,
                        "sentiment140",
                        self.formats(),
                        &format!("the first row has {} fields", row.len()),
                    ));
                }
                out.skip(
                    &file,
                    line,
                    format!("{} fields, expected 6", row.len()),
                    strict,
                )?;
                continue;
            }
            let target = match row[0].trim() {
                "0" => "negative",
                "4" => "positive",
                "2" => {
                    out.exclude("neutral");
                    continue;
                }
                other => {
                    return Err(TaskError::Label {
                        file,
                        line,
                        task: "sentiment140".into(),
                        label: other.into(),
                        valid: "0, 2 (dropped), 4".into(),
                    })
                }
            };
            out.examples.push(example(
                format!("sentiment140 tweet: {}", clean(&row[5])),
                target,
                None,
                &file,
                line,
            ));
        }
        Ok(())
    }
}
