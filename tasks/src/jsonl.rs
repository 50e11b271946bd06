//! JSON-lines task files (what `datasets`' `to_json` and most dataset dumps write): one
//! object per line, whose fields a task file names by key, or by a dotted path into nested
//! objects and lists (`answers.text.0`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::read::{each_line, MAX_ROW_BYTES};
use crate::{Task, TaskError};

/// One line's object, or why it is not one.
pub fn parse_object(line: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("not a JSON object but {}", kind(&other))),
        Err(e) => Err(format!("not JSON ({e})")),
    }
}

/// A JSON value's kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The value at `path`: a key, or keys and list indices joined by dots. A key that holds a
/// dot itself is found whole first.
pub fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = object.get(parts.next()?)?;
    for p in parts {
        v = match v {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A field's value as text: a string as it is, a number or boolean as JSON writes it; null,
/// a list or an object is the row's error.
pub fn text(object: &Map<String, Value>, path: &str) -> Result<String, String> {
    as_text(field(object, path)?, path)
}

/// A field of answers: a list (of strings, numbers or booleans), or one.
pub fn texts(object: &Map<String, Value>, path: &str) -> Result<Vec<String>, String> {
    texts_of(field(object, path)?, path)
}

/// [`texts`] of a value (`path` names it in messages).
pub fn texts_of(value: &Value, path: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::Array(_) => Err(format!("field {path:?} holds a list in its list")),
                v => as_text(v, path),
            })
            .collect(),
        v => as_text(v, path).map(|s| vec![s]),
    }
}

fn field<'a>(object: &'a Map<String, Value>, path: &str) -> Result<&'a Value, String> {
    lookup(object, path).ok_or_else(|| format!("no field {path:?} in this object"))
}

fn as_text(value: &Value, path: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Ok(v.to_string()),
        Value::Array(_) => Err(format!(
            "field {path:?} is a list: name one of its items ({path}.0)"
        )),
        v => Err(format!("field {path:?} is {}, not text", kind(v))),
    }
}

impl crate::spec::TaskSpec {
    /// A JSON-lines file through the task file: as a CSV, a field naming nothing fails the
    /// file once (here: no object of the file has it), and a row that cannot be read, or
    /// lacks a field, is skipped with its line.
    pub(crate) fn read_jsonl(
        &self,
        path: &Path,
        strict: bool,
        out: &mut crate::TaskData,
    ) -> Result<(), TaskError> {
        use crate::spec::template_fields;
        // Every field the task names must be in some object (a misspelt one is in none):
        // noted in the one pass over the file, and checked after it.
        let mut names: Vec<&str> = Vec::new();
        for t in [Some(&self.input_template), self.target_template.as_ref()]
            .into_iter()
            .flatten()
        {
            names.extend(template_fields(t).map_err(|e| self.format_error(path, e))?);
        }
        let columns = [
            &self.label_column,
            &self.category_column,
            &self.answers_column,
        ];
        names.extend(columns.into_iter().flatten().map(String::as_str));
        let mut found = vec![false; names.len()];
        let (mut objects, mut first_keys, mut first_error) = (0usize, None, None);
        let file = crate::read::file_name(path);
        let too_long = "not a task file (or split that row)";
        each_line(path, MAX_ROW_BYTES, too_long, |line, bytes| {
            out.read += 1;
            let o = match parse_object(bytes) {
                Ok(o) => o,
                Err(e) => {
                    first_error.get_or_insert((line, e.clone()));
                    return out.skip(&file, line, e, strict);
                }
            };
            objects += 1;
            first_keys.get_or_insert_with(|| o.keys().cloned().collect::<Vec<_>>());
            for (f, n) in found.iter_mut().zip(&names) {
                *f |= lookup(&o, n).is_some();
            }
            match self.example_of(&o, &file, line)? {
                Ok(ex) => out.examples.push(ex),
                Err(why) => out.skip(&file, line, why, strict)?,
            }
            Ok(())
        })?;
        // What a file that is one JSON document rather than lines of them gets told.
        const ONE_DOCUMENT: &str = "a task file reads JSON lines, one example's object per line (datasets' to_json writes them); a JSON array, a pretty-printed file or SQuAD's own nested {\"data\": ...} file must be turned into that first";
        let Some(keys) = first_keys else {
            let why = match first_error {
                None => "the file is empty".to_string(),
                Some((line, e)) => {
                    format!("line {line}: {e}, and so is every line: {ONE_DOCUMENT}")
                }
            };
            return Err(self.format_error(path, why));
        };
        if let Some((k, _)) = names.iter().zip(&found).find(|(_, f)| !**f) {
            let one = match objects {
                1 => format!("; the file holds one object: {ONE_DOCUMENT}"),
                _ => String::new(),
            };
            return Err(self.format_error(
                path,
                format!(
                    "no object has the field {k:?} (the first has {}; name nested fields by a dotted path, answers.text.0){one}",
                    keys.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// One object's example, or why the row is skipped; an unknown label is an error.
    fn example_of(
        &self,
        o: &Map<String, Value>,
        file: &str,
        line: u64,
    ) -> Result<Result<crate::Example, String>, TaskError> {
        use crate::builtin::{clean, example, unknown_label};
        use crate::spec::{render_with, MAX_RENDERED};
        let render = |t: &str| render_with(t, MAX_RENDERED, |k| text(o, k));
        let inputs = match render(&self.input_template) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let target = match (&self.label_map, &self.label_column, &self.target_template) {
            (Some(map), Some(l), _) => {
                let raw = match text(o, l) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
                let raw = raw.trim();
                let valid = || map.keys().cloned().collect::<Vec<_>>().join(", ");
                match map.get(raw) {
                    Some(t) => t.clone(),
                    None => return Err(unknown_label(self, file, line, raw, &valid())),
                }
            }
            (_, _, Some(t)) => match render(t) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            },
            _ => unreachable!("checked when loaded"),
        };
        let answers = match self.answers_column.as_deref().map(|a| texts(o, a)) {
            None => Vec::new(),
            Some(Ok(v)) => v.iter().map(|a| clean(a)).collect(),
            Some(Err(e)) => return Ok(Err(e)),
        };
        // A row without a category has none; one that is not text is the row's error.
        let category = match self.category_column.as_deref() {
            Some(c) if lookup(o, c).is_some_and(|v| !v.is_null()) => match text(o, c) {
                Ok(t) => Some(t.trim().to_string()),
                Err(e) => return Ok(Err(e)),
            },
            _ => None,
        };
        let mut ex = example(inputs, &target, category, file, line);
        ex.answers = answers;
        Ok(Ok(ex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_key_or_dotted_path() {
        let v: Value = serde_json::json!({
            "question": "Who?", "id": 7, "ok": true, "a.b": "dotted key",
            "answers": {"text": ["Ann", "Ann B."], "answer_start": [3, 3]},
            "none": null
        });
        let o = v.as_object().unwrap();
        assert_eq!(text(o, "question").unwrap(), "Who?");
        assert_eq!(text(o, "id").unwrap(), "7");
        assert_eq!(text(o, "ok").unwrap(), "true");
        assert_eq!(text(o, "a.b").unwrap(), "dotted key");
        assert_eq!(text(o, "answers.text.1").unwrap(), "Ann B.");
        assert_eq!(texts(o, "answers.text").unwrap(), ["Ann", "Ann B."]);
        assert_eq!(texts(o, "question").unwrap(), ["Who?"]);
        for (path, why) in [
            (
                "answers.text",
                "is a list: name one of its items (answers.text.0)",
            ),
            ("answers", "is an object"),
            ("none", "is null"),
            ("answers.text.5", "no field"),
            ("missing", "no field"),
        ] {
            let e = text(o, path).unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
        }
        // Numbers in a list of answers are text, as a field's are; null is not an answer.
        assert_eq!(texts(o, "answers.answer_start").unwrap(), ["3", "3"]);
        let e = texts_of(&serde_json::json!(["x", null]), "a").unwrap_err();
        assert!(e.contains("is null, not text"), "{e}");
    }

    #[test]
    fn objects_with_their_lines() {
        let dir = std::env::temp_dir().join(format!("conveyor-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        std::fs::write(
            &path,
            "\u{feff}{\"a\": 1}\r\n\n[1]\n{bad\n\u{feff}{\"a\": 2}",
        )
        .unwrap();
        let mut got: Vec<(u64, Result<usize, String>)> = Vec::new();
        each_line(&path, MAX_ROW_BYTES, "", |l, b| {
            got.push((l, parse_object(b).map(|m| m.len())));
            Ok(())
        })
        .unwrap();
        assert_eq!(got[0], (1, Ok(1)));
        assert_eq!(got[1].0, 3);
        assert!(got[1]
            .1
            .as_ref()
            .unwrap_err()
            .contains("not a JSON object but a list"));
        assert_eq!(got[2].0, 4);
        assert!(got[2].1.as_ref().unwrap_err().contains("not JSON"));
        assert_eq!(got[3], (5, Ok(1)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
