//! AG News topic classification: the 3-column CSV (class 1-4, title, description) without a
//! header. Targets are the class names World, Sports, Business, Sci/Tech. The backslashes the
//! original files use for line breaks become spaces.

use std::path::Path;

use super::{clean, example, unknown_label};
use crate::read::{file_name, rows, Layout};
use crate::{each_row, Metric, Task, TaskData, TaskError, TaskInfo};

const CLASSES: [&str; 4] = ["World", "Sports", "Business", "Sci/Tech"];

pub struct AgNews;

impl Task for AgNews {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "ag_news".into(),
            description: "AG News topics (World, Sports, Business, Sci/Tech); accuracy".into(),
            formats: "the AG News CSV without header: class (1-4), title, description".into(),
            labels: super::owned(&CLASSES),
            metric: Metric::Accuracy,
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let (_, rows) = rows(path, Layout::CSV_NO_HEADER)?;
        let file = file_name(path);
        each_row(self, path, rows, Some(3), strict, out, |line, row, out| {
            let class = row[0].trim();
            let target = class
                .parse::<usize>()
                .ok()
                .filter(|c| (1..=4).contains(c))
                .map(|c| CLASSES[c - 1])
                .ok_or_else(|| {
                    unknown_label(
                        self,
                        &file,
                        line,
                        class,
                        "1 (World), 2 (Sports), 3 (Business), 4 (Sci/Tech)",
                    )
                })?;
            let unslash = |s: &str| clean(&s.replace('\\', " "));
            let inputs = format!(
                "ag_news title: {} description: {}",
                unslash(&row[1]),
                unslash(&row[2])
            );
            out.examples
                .push(example(inputs, target, None, &file, line));
            Ok(())
        })
    }
}
