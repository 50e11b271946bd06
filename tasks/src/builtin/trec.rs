//! TREC question classification with the 50 fine-grained labels (Li & Roth 2002): lines of
//! `COARSE:fine question`, latin-1 encoded. The target is the full `COARSE:fine` label (fine
//! names such as `other` repeat across coarse classes).

use std::path::Path;

use super::{clean, example};
use crate::read::{file_name, read_latin1};
use crate::{Metric, Task, TaskData, TaskError};

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
    fn name(&self) -> &str {
        "trec"
    }
    fn description(&self) -> &str {
        "TREC question classification, 50 fine labels (COARSE:fine); accuracy"
    }
    fn formats(&self) -> &str {
        "a TREC label file: one `COARSE:fine question` per line, latin-1"
    }
    fn labels(&self) -> Option<Vec<String>> {
        Some(FINE.iter().map(|s| s.to_string()).collect())
    }
    fn metric(&self) -> Metric {
        Metric::Accuracy
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
            let Some((label, question)) = raw.split_once(' ') else {
                out.skip(&file, line, "no question after the label".into(), strict)?;
                continue;
            };
            if !label.contains(':') {
                if out.read == 1 {
                    return Err(TaskError::Format {
                        path: path.to_path_buf(),
                        task: "trec".into(),
                        expected: self.formats().into(),
                        message: format!("the first line starts with {label:?}"),
                    });
                }
                out.skip(&file, line, format!("{label:?} is not COARSE:fine"), strict)?;
                continue;
            }
            if !FINE.contains(&label) {
                return Err(TaskError::Label {
                    file,
                    line,
                    task: "trec".into(),
                    label: label.into(),
                    valid: FINE.join(", "),
                });
            }
            out.examples.push(example(
                format!("trec question: {}", clean(question)),
                label,
                None,
                &file,
                line,
            ));
        }
        Ok(())
    }
}
