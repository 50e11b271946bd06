//! AG News topic classification: the 3-column CSV (class 1-4, title, description) without a
//! header. Targets are the class names World, Sports, Business, Sci/Tech. The backslashes the
//! original files use for line breaks become spaces.

use std::path::Path;

use super::{clean, example};
use crate::read::{file_name, rows, Layout};
use crate::{Metric, Task, TaskData, TaskError};

const CLASSES: [&str; 4] = ["World", "Sports", "Business", "Sci/Tech"];

pub struct AgNews;

impl Task for AgNews {
    fn name(&self) -> &str {
        "ag_news"
    }
    fn description(&self) -> &str {
        "AG News topics (World, Sports, Business, Sci/Tech); accuracy"
    }
    fn formats(&self) -> &str {
        "the AG News CSV without header: class (1-4), title, description"
    }
    fn labels(&self) -> Option<Vec<String>> {
        Some(CLASSES.iter().map(|s| s.to_string()).collect())
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
            if row.len() != 3 {
                if out.read == 1 {
                    return Err(TaskError::Format {
                        path: path.to_path_buf(),
                        task: "ag_news".into(),
                        expected: self.formats().into(),
                        message: format!("the first row has {} fields", row.len()),
                    });
                }
                out.skip(
                    &file,
                    line,
                    format!("{} fields, expected 3", row.len()),
                    strict,
                )?;
                continue;
            }
            let class = row[0].trim();
            let Some(target) = class
                .parse::<usize>()
                .ok()
                .filter(|c| (1..=4).contains(c))
                .map(|c| CLASSES[c - 1])
            else {
                return Err(TaskError::Label {
                    file,
                    line,
                    task: "ag_news".into(),
                    label: class.into(),
                    valid: "1 (World), 2 (Sports), 3 (Business), 4 (Sci/Tech)".into(),
                });
            };
            let unslash = |s: &str| clean(&s.replace('\\', " "));
            out.examples.push(example(
                format!(
                    "ag_news title: {} description: {}",
                    unslash(&row[1]),
                    unslash(&row[2])
                ),
                target,
                None,
                &file,
                line,
            ));
        }
        Ok(())
    }
}
