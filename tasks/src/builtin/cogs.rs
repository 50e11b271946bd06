//! COGS semantic parsing: TSV rows of sentence, logical form, generalisation category (no
//! header, quotes are text). The target is the logical form; scored by exact match, overall
//! and per category.

use std::path::Path;

use super::example;
use crate::read::{file_name, rows, Layout};
use crate::{each_row, Metric, Task, TaskData, TaskError, TaskInfo};

pub struct Cogs;

impl Task for Cogs {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "cogs".into(),
            description:
                "COGS sentence -> logical form; exact match overall and per generalisation category"
                    .into(),
            formats: "COGS TSV without header: sentence, logical form, category".into(),
            labels: None,
            metric: Metric::ExactMatch,
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let (_, rows) = rows(path, Layout::TSV_NO_HEADER)?;
        let file = file_name(path);
        each_row(self, path, rows, Some(3), strict, out, |line, row, out| {
            let category = Some(row[2].trim().to_string());
            let inputs = format!("cogs: {}", row[0].trim());
            out.examples
                .push(example(inputs, row[1].trim(), category, &file, line));
            Ok(())
        })
    }
}
