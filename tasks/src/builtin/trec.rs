//! TREC question classification with the 50 fine-grained labels (Li & Roth 2002): lines of
//! `COARSE:fine question`, latin-1 encoded. The target is the full `COARSE:fine` label (fine
//! names such as `other` repeat across coarse classes).

use std::path::Path;

use super::{clean, example, unknown_label};
use crate::read::{file_name, read_latin1};
use crate::{Metric, Task, TaskData, TaskError, TaskInfo};

/// The 50 fine labels.
pub const FINE: [&str; 50] = [
    "ABBR:abb",
    "ABBR:exp",
    "ENTY:animal",
    "ENTY:body",
    "ENTY:color",
    "ENTY:cremat",
    "ENTY:currency",
    "ENTY:dismed",
    "ENTY:event",
    "ENTY:food",
    "ENTY:instru",
    "ENTY:lang",
    "ENTY:letter",
    "ENTY:other",
    "ENTY:plant",
    "ENTY:product",
    "ENTY:religion",
    "ENTY:sport",
    "ENTY:substance",
    "ENTY:symbol",
    "ENTY:techmeth",
    "ENTY:termeq",
    "ENTY:veh",
    "ENTY:word",
    "DESC:def",
    "DESC:desc",
    "DESC:manner",
    "DESC:reason",
    "HUM:gr",
    "HUM:ind",
    "HUM:title",
    "HUM:desc",
    "LOC:city",
    "LOC:country",
    "LOC:mount",
    "LOC:other",
    "LOC:state",
    "NUM:code",
    "NUM:count",
    "NUM:date",
    "NUM:dist",
    "NUM:money",
    "NUM:ord",
    "NUM:other",
    "NUM:perc",
    "NUM:period",
    "NUM:speed",
    "NUM:temp",
    "NUM:volsize",
    "NUM:weight",
];

pub struct Trec;

impl Task for Trec {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            name: "trec".into(),
            description: "TREC question classification, 50 fine labels (COARSE:fine); accuracy"
                .into(),
            formats: "a TREC label file: one `COARSE:fine question` per line, latin-1".into(),
            labels: super::owned(&FINE),
            metric: Metric::Accuracy,
        }
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let text = read_latin1(path)?;
        let file = file_name(path);
        for (i, raw) in text.lines().enumerate() {
            let line = i as u64 + 1;
            if raw.trim().is_empty() {
                continue;
            }
            out.read += 1;
            let (label, question) = raw.split_once(' ').unwrap_or((raw, ""));
            if !label.contains(':') || question.trim().is_empty() {
                if out.read == 1 {
                    return Err(
                        self.format_error(path, format!("the first line starts with {label:?}"))
                    );
                }
                out.skip(&file, line, "not `COARSE:fine question`".into(), strict)?;
                continue;
            }
            if !FINE.contains(&label) {
                return Err(unknown_label(self, &file, line, label, &FINE.join(", ")));
            }
            let inputs = format!("trec question: {}", clean(question));
            out.examples.push(example(inputs, label, None, &file, line));
        }
        Ok(())
    }
}
