//! COGS semantic parsing: TSV rows of sentence, logical form, generalisation category (no
//! header, quotes are text). The target is the logical form; scored by exact match, overall
//! and per category.

use std::path::Path;

use super::example;
use crate::read::{file_name, rows, Layout};
use crate::{Metric, Task, TaskData, TaskError};

pub struct Cogs;

impl Task for Cogs {
    fn name(&self) -> &str {
        "cogs"
    }
    fn description(&self) -> &str {
        "COGS sentence -> logical form; exact match overall and per generalisation category"
    }
    fn formats(&self) -> &str {
        "COGS TSV without header: sentence, logical form, category"
    }
    fn labels(&self) -> Option<Vec<String>> {
        None
    }
    fn metric(&self) -> Metric {
        Metric::ExactMatch
    }
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let (_, rows) = rows(path, Layout::TSV_NO_HEADER)?;
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
                        task: "cogs".into(),
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
            out.examples.push(example(
                format!("cogs: {}", row[0].trim()),
                row[1].trim(),
                Some(row[2].trim().to_string()),
                &file,
                line,
            ));
        }
        Ok(())
    }
}
