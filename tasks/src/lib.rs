//! conveyor's text-to-text tasks. Each task reads its dataset in the formats people download,
//! turns every row into an (inputs, targets) text pair with a task prefix, and names its
//! metric. Bad rows are reported with file and line and counted, never dropped silently.

pub mod builtin;
pub mod evaluation;
pub mod holdout;
pub mod jsonl;
pub mod metric;
pub mod prepare;
pub mod read;
pub mod report;
pub mod score;
pub mod spec;
pub mod spread;
pub mod squad;
pub mod synth;
pub mod texts;

use std::path::{Path, PathBuf};

pub use evaluation::EvalSummary;
pub use metric::{Metric, Scores};

/// One text-to-text example, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub inputs: String,
    pub targets: String,
    /// A grouping for per-category metrics (COGS's generalisation type).
    pub category: Option<String>,
    /// Other acceptable answers (SQuAD's), scored beside the target; empty for most tasks.
    pub answers: Vec<String>,
    /// The file and 1-based line (or row) it came from.
    pub file: String,
    pub line: u64,
}

/// A row that was not turned into an example, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What reading a task's files produced.
#[derive(Debug, Default)]
pub struct TaskData {
    pub examples: Vec<Example>,
    /// Rows read (header lines excluded).
    pub read: u64,
    /// Malformed rows.
    pub skipped: Vec<Skipped>,
    /// Rows left out on purpose, by reason (e.g. Sentiment140's neutral tweets).
    pub excluded: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{}: {message}", conveyor_pipeline::printable::path(path))]
    Io { path: PathBuf, message: String },
    #[error(
        "{}: not a {task} file: {message}. Expected {expected}",
        conveyor_pipeline::printable::path(path)
    )]
    Format {
        path: PathBuf,
        task: String,
        expected: String,
        message: String,
    },
    #[error("{file}:{line}: unknown label {label:?} for {task}; valid labels: {valid}")]
    Label {
        file: String,
        line: u64,
        task: String,
        label: String,
        valid: String,
    },
    #[error("{file}:{line}: {message} (stopping because of --strict)")]
    Strict {
        file: String,
        line: u64,
        message: String,
    },
    /// `--strict` over a complete output prepared without it, which skipped rows.
    #[error("{first}: skipped, with {skipped} row(s) in all, by the run that wrote {} without --strict; rerun without --strict to keep that output, or fix the input and use --overwrite (stopping because of --strict)", conveyor_pipeline::printable::path(out))]
    StrictOver {
        out: std::path::PathBuf,
        skipped: u64,
        first: String,
    },
    #[error("unknown task {0:?}; `conveyor task list` shows the built-in ones, and a task defined in a TOML file needs --task-file FILE")]
    Unknown(String),
    #[error("{}: defines the task {defined:?}, not {asked:?}: name the task the file defines, or drop --task-file", conveyor_pipeline::printable::path(path))]
    OtherTask {
        path: PathBuf,
        defined: String,
        asked: String,
    },
}

/// What describes a task.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The registry name, e.g. `sst2`.
    pub name: String,
    /// One line for `conveyor task list`.
    pub description: String,
    /// The formats `read` understands, for messages and `task show`.
    pub formats: String,
    /// The target texts of a classification task (None for generation tasks).
    pub labels: Option<Vec<String>>,
    pub metric: Metric,
}

/// A text-to-text task.
pub trait Task: Send + Sync {
    fn info(&self) -> TaskInfo;
    /// Reads one file (or directory) into `out`. `strict` turns the first bad row into an
    /// error.
    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError>;

    fn name(&self) -> String {
        self.info().name
    }

    fn labels(&self) -> Option<Vec<String>> {
        self.info().labels
    }

    /// Bumped when the task's reader starts making other examples from the same files, so
    /// that data prepared before is not taken for this task's (0: as first written).
    fn revision(&self) -> u32 {
        0
    }

    /// Whether its examples carry other acceptable answers beside the target (SQuAD's),
    /// written to the `answers` column of its example shards.
    fn has_answers(&self) -> bool {
        false
    }

    /// What defines a task that is not built in (a task file's settings): part of its
    /// prepared data's identity, so that an edited task file is another job.
    fn definition(&self) -> Option<serde_json::Value> {
        None
    }

    /// The error for a file that is not in one of this task's formats.
    fn format_error(&self, path: &Path, message: String) -> TaskError {
        let info = self.info();
        TaskError::Format {
            path: path.to_path_buf(),
            task: info.name,
            expected: info.formats,
            message,
        }
    }
}

impl TaskData {
    /// Records a malformed row (or fails under `strict`).
    pub fn skip(
        &mut self,
        file: &str,
        line: u64,
        reason: String,
        strict: bool,
    ) -> Result<(), TaskError> {
        if strict {
            return Err(TaskError::Strict {
                file: file.into(),
                line,
                message: reason,
            });
        }
        self.skipped.push(Skipped {
            file: file.into(),
            line,
            reason,
        });
        Ok(())
    }

    pub fn exclude(&mut self, why: &str) {
        *self.excluded.entry(why.into()).or_default() += 1;
    }
}

/// Every built-in task.
pub fn registry() -> Vec<Box<dyn Task>> {
    builtin::all()
}

/// The task called `name`: the one `task_file` defines (which must be called so), or a
/// built-in one.
pub fn resolve(name: &str, task_file: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let Some(f) = task_file else {
        return find(name);
    };
    let t = spec::load(f)?;
    if t.name() != name {
        // Falling back to a built-in task of that name would run another task than the
        // file the user gave.
        return Err(TaskError::OtherTask {
            path: f.to_path_buf(),
            defined: t.name().to_string(),
            asked: name.to_string(),
        });
    }
    Ok(t)
}

/// The sha256 of a task file's settings (None for a built-in task): recorded with the data
/// it prepares, so that `eval` can tell the task it is given from the one it was prepared
/// for.
pub fn definition_sha256(task: &dyn Task) -> Option<String> {
    use sha2::Digest;
    let mut d = task.definition()?;
    // What shapes the examples and scores: a new description is the same task.
    if let Some(m) = d.as_object_mut() {
        m.remove("description");
    }
    Some(conveyor_pipeline::manifest::hex(&sha2::Sha256::digest(
        d.to_string().as_bytes(),
    )))
}

/// The built-in task called `name`.
pub fn find(name: &str) -> Result<Box<dyn Task>, TaskError> {
    registry()
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| TaskError::Unknown(name.into()))
}

/// Goes through the rows of a delimited file: each row is counted; a row that cannot be
/// parsed or has another number of fields than `fields` is skipped with its line (or fails
/// under `strict`) — except the very first row, whose wrong shape means a wrong format.
/// `f` gets the line and fields of every good row.
pub fn each_row(
    task: &dyn Task,
    path: &Path,
    rows: Vec<read::Row>,
    fields: Option<usize>,
    strict: bool,
    out: &mut TaskData,
    mut f: impl FnMut(u64, Vec<String>, &mut TaskData) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let file = read::file_name(path);
    for (i, (line, row)) in rows.into_iter().enumerate() {
        out.read += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                out.skip(&file, line, e, strict)?;
                continue;
            }
        };
        if let Some(n) = fields.filter(|&n| n != row.len()) {
            if i == 0 {
                return Err(task.format_error(
                    path,
                    format!("the first row has {} fields, not {n}", row.len()),
                ));
            }
            out.skip(
                &file,
                line,
                format!("{} fields, expected {n}", row.len()),
                strict,
            )?;
            continue;
        }
        f(line, row, out)?;
    }
    Ok(())
}

/// Reads every file of `paths` for `task`.
pub fn read_all(task: &dyn Task, paths: &[PathBuf], strict: bool) -> Result<TaskData, TaskError> {
    let mut data = TaskData::default();
    for p in paths {
        task.read(p, strict, &mut data)?;
    }
    Ok(data)
}
