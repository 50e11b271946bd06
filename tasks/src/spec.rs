//! Tasks without Rust: a TOML file that names the file layout, an input template, a target
//! template or a label map, and the metric. Loaded with `--task-file`.
//!
//! ```toml
//! name = "my_sst2"
//! description = "SST-2 through a task file"
//! format = "tsv"            # csv, tsv or jsonl (one JSON object per line)
//! header = true             # the first row names the columns (CSV, TSV)
//! input_template = "my_sst2 sentence: {sentence}"   # {column name} (or {0}, {1}, ... without header;
//!                           # in JSON lines a key, or a dotted path: {answers.text.0})
//! label_column = "label"
//! metric = "accuracy"       # accuracy, f1:LABEL (accuracy and F1 of LABEL), exact_match, squad
//! # answers_column = "answers.text"   # squad: other acceptable answers (a list, or one)
//! [label_map]               # raw label -> target text; or target_template = "{column}"
//! "0" = "negative"
//! "1" = "positive"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::builtin::{clean, example, unknown_label};
use crate::read::{file_name, io_error, rows, Layout};
use crate::{each_row, Metric, Task, TaskData, TaskError, TaskInfo};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpecFormat {
    Csv,
    Tsv,
    Jsonl,
}

fn yes() -> bool {
    true
}

/// A task defined in TOML.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub format: SpecFormat,
    #[serde(default = "yes")]
    pub header: bool,
    pub input_template: String,
    #[serde(default)]
    pub target_template: Option<String>,
    #[serde(default)]
    pub label_column: Option<String>,
    #[serde(default)]
    pub label_map: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub category_column: Option<String>,
    pub metric: String,
    /// The field of each row's acceptable answers, all scored (`squad`). Left out of the
    /// settings' sha256 when absent, so that task files from before it keep their data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_column: Option<String>,
}

/// Loads and checks a task file.
pub fn load(path: &Path) -> Result<Box<dyn Task>, TaskError> {
    let text = conveyor_pipeline::regular::read_to_string(
        path,
        conveyor_pipeline::regular::MAX_JSON_BYTES,
    )
    .map_err(|e| io_error(path, e))?;
    let mut spec: TaskSpec = toml::from_str(&text).map_err(|e| io_error(path, e))?;
    let bad = |m: &str| Err(io_error(path, m));
    // Labels are read, and outputs scored, without the spaces around them: a map keeping
    // them made `"1" = "positive "` a target no output could equal (every one "invalid").
    if let Some(map) = spec.label_map.take() {
        let mut trimmed = BTreeMap::new();
        for (raw, target) in map {
            let (raw, target) = (raw.trim().to_string(), target.trim().to_string());
            if target.is_empty() {
                return bad(&format!("label_map gives label {raw:?} an empty target"));
            }
            if trimmed.insert(raw.clone(), target).is_some() {
                return bad(&format!(
                    "label_map lists label {raw:?} twice (once with spaces around it)"
                ));
            }
        }
        spec.label_map = Some(trimmed);
    }
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return bad("name must be letters, digits or _");
    }
    // A task file named like a built-in task would be taken for it wherever the file is not
    // given (an `eval` without --task-file scored with the built-in's labels; a report put
    // it in the built-in's column).
    if crate::find(&spec.name).is_ok() {
        return bad(&format!(
            "name {:?} is a built-in task's: give this task a name of its own (`conveyor task list` shows the built-in ones)",
            spec.name
        ));
    }
    for (what, t) in [
        ("input_template", Some(&spec.input_template)),
        ("target_template", spec.target_template.as_ref()),
    ] {
        if let Some(Err(e)) = t.map(|t| template_fields(t)) {
            return bad(&format!("{what}: {e}"));
        }
    }
    match (&spec.label_map, &spec.target_template, &spec.label_column) {
        (Some(_), None, Some(_)) | (None, Some(_), None) => {}
        _ => return bad("give either label_column with label_map, or target_template"),
    }
    if !["accuracy", "exact_match", "squad"].contains(&spec.metric.as_str())
        && !spec.metric.starts_with("f1:")
    {
        return bad("metric must be accuracy, exact_match, squad or f1:LABEL");
    }
    if spec.answers_column.is_some() && spec.format != SpecFormat::Jsonl {
        return bad("answers_column reads each row's list of answers from JSON lines (format = \"jsonl\"); a CSV or TSV row holds one answer, its target: leave it out");
    }
    // Other answers would be read and written, and no other metric scores them.
    if spec.answers_column.is_some() && spec.metric != "squad" {
        return bad(&format!(
            "answers_column is scored only by metric = \"squad\", not {:?}: leave it out, or score with squad",
            spec.metric
        ));
    }
    // F1 of a label no target can be is 0 whatever the model does (a misspelt label).
    if let (Some(label), Some(map)) = (spec.metric.strip_prefix("f1:"), &spec.label_map) {
        if !map.values().any(|t| t.trim() == label.trim()) {
            return Err(io_error(
                path,
                format!("metric f1:{label} names no target of label_map"),
            ));
        }
    }
    Ok(Box::new(spec))
}

/// The longest text a template may render to (ingest's document limit): a template repeating
/// a long field would otherwise multiply the input's size in memory; such a row is skipped
/// with the reason.
pub(crate) const MAX_RENDERED: usize = conveyor_pipeline::source::MAX_DOCUMENT_BYTES;

/// The `{field}` names of a template, in order; an unclosed `{`, or a `{` inside a field
/// name (`{{text}}`: a template has no way to write a brace itself), is an error.
pub(crate) fn template_fields(template: &str) -> Result<Vec<&str>, String> {
    let mut fields = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?;
        let key = &after[..close];
        if key.is_empty() || key.contains('{') {
            return Err(format!(
                "{{{key}}} in {template:?} is not a field name (a template cannot hold a brace of its own)"
            ));
        }
        fields.push(key);
        rest = &after[close + 1..];
    }
    Ok(fields)
}

/// The column a template's field names: a header name, or (a number) an index.
fn field_index(header: &[String], key: &str) -> Option<usize> {
    header
        .iter()
        .position(|h| h == key)
        .or_else(|| key.parse::<usize>().ok())
}

/// The width most rows of a file without a header have (the first such, on a tie): one
/// malformed first row does not set it.
fn most_common_width(rows: &[crate::read::Row]) -> Option<usize> {
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for w in rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(Vec::len))
    {
        match counts.iter_mut().find(|(width, _)| *width == w) {
            Some((_, n)) => *n += 1,
            None => counts.push((w, 1)),
        }
    }
    let most = counts.iter().map(|&(_, n)| n).max()?;
    counts.into_iter().find(|&(_, n)| n == most).map(|(w, _)| w)
}

/// `{field}` placeholders of a template, resolved against the header (or as indices).
fn render(template: &str, header: &[String], row: &[String]) -> Result<String, String> {
    render_at_most(template, header, row, MAX_RENDERED)
}

fn render_at_most(
    template: &str,
    header: &[String],
    row: &[String],
    max: usize,
) -> Result<String, String> {
    render_with(template, max, |key| {
        let i = field_index(header, key)
            .ok_or_else(|| format!("template field {key:?} is not a column"))?;
        row.get(i)
            .cloned()
            .ok_or_else(|| format!("no field {key:?} in this row"))
    })
}

/// A template with each `{field}` replaced by `get(field)`, white space collapsed, at most
/// `max` bytes (a longer rendering is the row's error).
pub(crate) fn render_with(
    template: &str,
    max: usize,
    get: impl Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in template {template:?}"))?
            + open;
        let key = &rest[open + 1..close];
        let v = clean(&get(key)?);
        if out.len() + v.len() > max {
            return Err(format!(
                "the template renders this row to over {max} bytes (field {key:?} holds {}); skipped",
                v.len()
            ));
        }
        out.push_str(&v);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl TaskSpec {
    /// Every template field names a column of `header` (or, without one, an index below
    /// `width`).
    fn check_fields(&self, path: &Path, header: &[String], width: usize) -> Result<(), TaskError> {
        let templates = [Some(&self.input_template), self.target_template.as_ref()];
        let columns = [self.label_column.as_ref(), self.category_column.as_ref()];
        for c in columns.into_iter().flatten() {
            self.once_in(path, header, c)?;
        }
        for t in templates.into_iter().flatten() {
            let names = template_fields(t).map_err(|e| self.format_error(path, e))?;
            for k in &names {
                self.once_in(path, header, k)?;
            }
            let missing = |k: &&&str| field_index(header, k).is_none_or(|i| i >= width);
            if let Some(k) = names.iter().find(missing) {
                let columns = match header.is_empty() {
                    true => format!("fields 0 to {}", width - 1),
                    false => format!("columns {}", header.join(", ")),
                };
                return Err(self.format_error(
                    path,
                    format!("template field {{{k}}} is not one of its {columns}"),
                ));
            }
        }
        Ok(())
    }

    /// A column the task names is not one of two of the same name (the first was taken).
    fn once_in(&self, path: &Path, header: &[String], name: &str) -> Result<(), TaskError> {
        match header.iter().filter(|h| *h == name).count() {
            0 | 1 => Ok(()),
            n => Err(self.format_error(
                path,
                format!("the header names {n} columns {name:?}: rename them apart"),
            )),
        }
    }
}

impl Task for TaskSpec {
    fn info(&self) -> TaskInfo {
        let labels = self.label_map.as_ref().map(|m| {
            let mut v: Vec<String> = Vec::new();
            for t in m.values() {
                if !v.contains(t) {
                    v.push(t.clone());
                }
            }
            v
        });
        TaskInfo {
            name: self.name.clone(),
            description: if self.description.is_empty() {
                format!("task file: {}", self.name)
            } else {
                self.description.clone()
            },
            formats: match (self.format, self.header) {
                (SpecFormat::Jsonl, _) => {
                    "JSON lines (one object per line), per its task file".into()
                }
                (f, header) => format!(
                    "{} {} header, per its task file",
                    if f == SpecFormat::Csv { "CSV" } else { "TSV" },
                    if header { "with" } else { "without" }
                ),
            },
            labels,
            metric: match self.metric.as_str() {
                "exact_match" => Metric::ExactMatch,
                "squad" => Metric::Squad,
                m => match m.strip_prefix("f1:") {
                    Some(p) => Metric::AccuracyF1 {
                        positive: p.trim().into(),
                    },
                    None => Metric::Accuracy,
                },
            },
        }
    }

    /// 1: rows of another width than the header's skipped (a missing label was an error
    /// "unknown label", an extra field ignored), spaces around labels and targets dropped.
    fn revision(&self) -> u32 {
        1
    }

    fn definition(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    fn has_answers(&self) -> bool {
        self.answers_column.is_some()
    }

    fn read(&self, path: &Path, strict: bool, out: &mut TaskData) -> Result<(), TaskError> {
        let layout = match (self.format, self.header) {
            (SpecFormat::Jsonl, _) => return self.read_jsonl(path, strict, out),
            (SpecFormat::Csv, true) => Layout::CSV,
            (SpecFormat::Csv, false) => Layout::CSV_NO_HEADER,
            (SpecFormat::Tsv, true) => Layout::TSV,
            (SpecFormat::Tsv, false) => Layout::TSV_NO_HEADER,
        };
        let (header, rows) = rows(path, layout)?;
        if self.header && header.is_empty() {
            return Err(self.format_error(path, "the file is empty: no header row".into()));
        }
        // A row of another shape than the header's (or, without one, the first row's) is
        // malformed: skipped and counted, not read as a label "" or a field that is not there.
        let fields = match self.header {
            true => Some(header.len()),
            false => most_common_width(&rows),
        };
        let col = |name: &Option<String>| -> Result<Option<usize>, TaskError> {
            match name {
                None => Ok(None),
                Some(n) => header
                    .iter()
                    .position(|h| h == n)
                    .or_else(|| n.parse().ok())
                    .map(Some)
                    .ok_or_else(|| self.format_error(path, format!("no column {n:?}"))),
            }
        };
        // A field that names no column fails the file here, once, not each of its rows (a
        // file of no rows has nothing to check).
        if let Some(width) = fields {
            self.check_fields(path, &header, width)?;
        }
        let label = col(&self.label_column)?;
        let category = col(&self.category_column)?;
        let file = file_name(path);
        let valid = self
            .label_map
            .as_ref()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        each_row(self, path, rows, None, strict, out, |line, row, out| {
            // Checked here, not by `each_row`, whose first row of another width would fail
            // the whole file as another format: the header (or the usual width) says it.
            if let Some(n) = fields.filter(|&n| n != row.len()) {
                let why = format!("{} fields, expected {n}", row.len());
                return out.skip(&file, line, why, strict);
            }
            let inputs = match render(&self.input_template, &header, &row) {
                Ok(s) => s,
                Err(e) => return out.skip(&file, line, e, strict),
            };
            let target = match (&self.label_map, label, &self.target_template) {
                (Some(map), Some(l), _) => {
                    let raw = row.get(l).map(|s| s.trim()).unwrap_or("");
                    map.get(raw)
                        .cloned()
                        .ok_or_else(|| unknown_label(self, &file, line, raw, &valid))?
                }
                (_, _, Some(t)) => match render(t, &header, &row) {
                    Ok(s) => s,
                    Err(e) => return out.skip(&file, line, e, strict),
                },
                _ => unreachable!("checked when loaded"),
            };
            let cat = category
                .and_then(|c| row.get(c))
                .map(|s| s.trim().to_string());
            out.examples
                .push(example(inputs, &target, cat, &file, line));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_use_columns_or_indices() {
        let h = vec!["a".to_string(), "b".to_string()];
        let r = vec!["x  y".to_string(), "z".to_string()];
        assert_eq!(render("p: {a} / {1}", &h, &r).unwrap(), "p: x y / z");
        assert!(render("{nope}", &h, &r).is_err());
        // A template repeating a field stops at the limit instead of growing without one.
        let e = render_at_most("{a}{a}{a}", &h, &r, 8).unwrap_err();
        assert!(e.contains("over 8 bytes") && e.contains("\"a\""), "{e}");
        assert_eq!(render_at_most("{a}{a}", &h, &r, 8).unwrap(), "x yx y");
        // Mistakes in a template are the file's, found when it loads, not once per row.
        assert_eq!(template_fields("p: {a} / {1}").unwrap(), ["a", "1"]);
        for bad in ["{a", "x {}", "{{a}}"] {
            assert!(template_fields(bad).is_err(), "{bad}");
        }
    }

    /// The settings' sha256 of a task file from before `answers_column` (and `jsonl`) is
    /// what it was: data prepared with it is still evaluated with it.
    #[test]
    fn settings_of_older_task_files_hash_as_before() {
        let dir = std::env::temp_dir().join(format!("conveyor-spec-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        let text = "name = \"mood\"\nformat = \"tsv\"\ninput_template = \"{0}\"\ntarget_template = \"{1}\"\nmetric = \"exact_match\"\n";
        std::fs::write(&path, text).unwrap();
        let task = load(&path).unwrap();
        // As computed before the fields were added (their JSON had no such key).
        assert_eq!(
            crate::definition_sha256(task.as_ref()).unwrap(),
            "6bba115463f3be3d9d81226650b4323c3aab468c0f1a1de99f9d96091635845f"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A row with fields missing or extra is malformed: skipped with its line and counted
    /// (it stopped the run as an unknown label ""), with or without a header.
    #[test]
    fn rows_of_another_shape_are_skipped_and_an_empty_file_named() {
        let dir = std::env::temp_dir().join(format!("conveyor-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = |header: bool, label: &str| {
            let path = dir.join(format!("{header}.toml"));
            std::fs::write(
                &path,
                format!("name = \"mood\"\nformat = \"tsv\"\nheader = {header}\ninput_template = \"{{0}}\"\nlabel_column = \"{label}\"\nmetric = \"accuracy\"\n[label_map]\n\"0\" = \"sad\"\n\"1\" = \"happy\"\n"),
            )
            .unwrap();
            load(&path).unwrap()
        };
        // The malformed row first: it neither fails the file nor sets the width.
        let rows = "only_one_field\ngood day\t1\nbad day\t0\ntoo\tmany\tfields\n";
        let data = dir.join("rows.tsv");
        for (header, label, text) in [
            (true, "label", format!("text\tlabel\n{rows}")),
            (false, "1", rows.to_string()),
        ] {
            std::fs::write(&data, text).unwrap();
            let d = crate::read_all(
                spec(header, label).as_ref(),
                std::slice::from_ref(&data),
                false,
            )
            .unwrap();
            let skipped: Vec<_> = d
                .skipped
                .iter()
                .map(|s| (s.line, s.reason.clone()))
                .collect();
            let first = u64::from(header) + 1;
            assert_eq!(d.examples.len(), 2, "header {header}");
            assert_eq!(
                skipped,
                [
                    (first, "1 fields, expected 2".to_string()),
                    (first + 3, "3 fields, expected 2".to_string())
                ],
                "header {header}"
            );
        }
        // A field naming no column fails the file once, naming the columns.
        std::fs::write(&data, format!("text\tlabel\n{rows}")).unwrap();
        let path = dir.join("typo.toml");
        let text = std::fs::read_to_string(dir.join("true.toml")).unwrap();
        std::fs::write(&path, text.replace("{0}", "{txt}")).unwrap();
        let e = crate::read_all(
            load(&path).unwrap().as_ref(),
            std::slice::from_ref(&data),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("{txt} is not one of its columns text, label"),
            "{e}"
        );
        // Two columns of one name: which one the task meant is not guessed.
        std::fs::write(&data, "text\tlabel\tlabel\ngood\t1\t0\n").unwrap();
        let e = crate::read_all(
            spec(true, "label").as_ref(),
            std::slice::from_ref(&data),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("2 columns \"label\""), "{e}");
        std::fs::write(&path, text.replace("{0}", "{text")).unwrap();
        let e = load(&path).err().unwrap().to_string();
        assert!(e.contains("input_template: unclosed {"), "{e}");
        std::fs::write(&data, "").unwrap();
        let e = crate::read_all(spec(true, "label").as_ref(), &[data], false).unwrap_err();
        assert!(e.to_string().contains("the file is empty"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
