//! `conveyor task score`: a task's metric over predictions made anywhere (conveyor's `eval`,
//! or a trainer of one's own), read from JSON lines, one example each:
//! `{"prediction": "...", "target": "...", "category": "..." or null}`, and for tasks scored
//! by `squad` `"answers"`, the other acceptable answers beside the target (a list, one
//! string, or SQuAD's `{"text": [...]}`); `eval`'s `predictions.jsonl` is such a file, and
//! other keys are ignored.

use std::path::Path;

use crate::read::{each_line, io_error};
use crate::{Scores, Task, TaskError};

/// The longest line read: a prediction or target past it is no model's output.
const MAX_LINE_BYTES: u64 = 16 << 20;

/// The columns of a predictions file.
#[derive(Debug, Default, PartialEq)]
pub struct Predictions {
    pub predictions: Vec<String>,
    pub targets: Vec<String>,
    /// Each example's other acceptable answers (empty where the task has none).
    pub answers: Vec<Vec<String>>,
    pub categories: Vec<Option<String>>,
}

/// Reads a predictions file; a line that is not such an object is an error naming it.
/// `answers` (tasks scored by `squad`) reads each line's other answers, which other tasks
/// ignore with the other keys.
pub fn read_predictions(path: &Path, answers: bool) -> Result<Predictions, TaskError> {
    let mut out = Predictions::default();
    each_line(
        path,
        MAX_LINE_BYTES,
        "not a predictions file",
        |number, line| {
            let bad = |why: String| {
                io_error(
                path,
                format!("line {number}: {why}; each line must be a JSON object with \"prediction\" and \"target\" strings (and \"category\", a string or null, and \"answers\", a list of strings, if the task has them)"),
            )
            };
            let v: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
            let text = |key: &str| match v.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("\"{key}\" is {other}, not a string"))),
                None => Err(bad(format!("no \"{key}\""))),
            };
            out.predictions.push(text("prediction")?);
            out.targets.push(text("target")?);
            out.answers.push(match (answers, v.get("answers")) {
                (false, _) | (_, None | Some(serde_json::Value::Null)) => Vec::new(),
                // A list, one answer, or SQuAD's {"text": [...], "answer_start": [...]}.
                (true, Some(a)) => {
                    crate::jsonl::texts_of(a.get("text").unwrap_or(a), "answers").map_err(bad)?
                }
            });
            out.categories.push(match v.get("category") {
                None | Some(serde_json::Value::Null) => None,
                Some(_) => Some(text("category")?),
            });
            Ok(())
        },
    )?;
    if out.targets.is_empty() {
        return Err(io_error(path, "holds no prediction: nothing to score"));
    }
    Ok(out)
}

/// The task's scores of `p`, as `eval` computes them.
pub fn score(task: &dyn Task, p: &Predictions) -> Scores {
    task.info().metric.score(
        &p.predictions,
        &p.targets,
        &p.answers,
        &p.categories,
        task.labels().as_deref(),
    )
}
