//! The built-in tasks of the study (docs/study.md "Tasks"). Adding one: a file with a
//! type implementing [`crate::Task`] and a line in [`all`].

mod ag_news;
mod cogs;
mod sentiment;
mod toxicity;
mod trec;

use crate::Task;

/// Every built-in task, in `conveyor task list` order.
pub fn all() -> Vec<Box<dyn Task>> {
    vec![
        Box::new(toxicity::CivilComments),
        Box::new(toxicity::WikiToxicity),
        Box::new(sentiment::Imdb),
        Box::new(sentiment::Sst2),
        Box::new(sentiment::Sentiment140),
        Box::new(trec::Trec),
        Box::new(ag_news::AgNews),
        Box::new(cogs::Cogs),
    ]
}

/// Builds an example.
pub(crate) fn example(
    inputs: String,
    targets: &str,
    category: Option<String>,
    file: &str,
    line: u64,
) -> crate::Example {
    crate::Example {
        inputs,
        targets: targets.to_string(),
        category,
        answers: Vec::new(),
        file: file.to_string(),
        line,
    }
}

/// Collapses runs of white space (including newlines inside quoted fields) to one space.
pub(crate) fn clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error for a label that is not one of the task's.
pub(crate) fn unknown_label(
    task: &dyn Task,
    file: &str,
    line: u64,
    label: &str,
    valid: &str,
) -> crate::TaskError {
    crate::TaskError::Label {
        file: file.into(),
        line,
        task: task.name(),
        label: label.into(),
        valid: valid.into(),
    }
}

/// A label list as owned strings.
pub(crate) fn owned(labels: &[&str]) -> Option<Vec<String>> {
    Some(labels.iter().map(|s| s.to_string()).collect())
}
