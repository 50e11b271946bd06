//! Pulls the text field (and `url`, `timestamp`) out of one JSON line without building a
//! full JSON tree: other fields are skipped unparsed.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{Document, ProblemKind};

/// The fields found in one JSON object.
#[derive(Debug, Default)]
pub struct JsonFields {
    pub text: Option<Value>,
    pub url: Option<Value>,
    pub timestamp: Option<Value>,
}

struct Seed<'a> {
    text_field: &'a str,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = JsonFields;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<JsonFields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = JsonFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonFields, A::Error> {
        let mut out = JsonFields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.text_field {
                out.text = Some(map.next_value()?);
            } else if key == "url" {
                out.url = Some(map.next_value()?);
            } else if key == "timestamp" {
                out.timestamp = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

fn as_opt_string(v: Option<Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Parses one JSON line into a document.
/// A blank line (whitespace only) is an empty record, not malformed JSON: JSON-lines readers
/// (pyarrow's, Hugging Face datasets') pass over them, and files often end in one.
pub fn parse_json_line(bytes: &[u8], text_field: &str) -> Result<Document, (ProblemKind, String)> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err((ProblemKind::Empty, "blank line".into()));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err((
            ProblemKind::InvalidUtf8,
            format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = Seed { text_field }
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|_| f))
        .map_err(|e| (ProblemKind::MalformedJson, format!("malformed JSON: {e}")))?;
    let text = match fields.text {
        Some(Value::String(s)) => s,
        Some(Value::Null) => {
            return Err((
                ProblemKind::NullText,
                format!("field `{text_field}` is null"),
            ))
        }
        None => {
            return Err((
                ProblemKind::MissingText,
                format!("no `{text_field}` field (choose the field with --text-field)"),
            ))
        }
        Some(other) => {
            return Err((
                ProblemKind::MissingText,
                format!(
                    "field `{text_field}` is not a string but {}",
                    kind_of(&other)
                ),
            ))
        }
    };
    Ok(Document {
        text,
        url: as_opt_string(fields.url),
        timestamp: as_opt_string(fields.timestamp),
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_c4_lines() {
        let d = parse_json_line(
            br#"{"text":"a\nb \u00e9","timestamp":"2019-04-25T12:57:54Z","url":"https://x","extra":[1,{"y":2}]}"#,
            "text",
        )
        .unwrap();
        assert_eq!(d.text, "a\nb é");
        assert_eq!(d.url.as_deref(), Some("https://x"));
        assert_eq!(d.timestamp.as_deref(), Some("2019-04-25T12:57:54Z"));
    }

    #[test]
    fn classifies_bad_lines() {
        let kind = |b: &[u8], f: &str| parse_json_line(b, f).unwrap_err().0;
        assert_eq!(
            kind(b"{\"text\": \"x\"", "text"),
            ProblemKind::MalformedJson
        );
        assert_eq!(
            kind(b"{\"text\": \"x\"} trailing", "text"),
            ProblemKind::MalformedJson
        );
        assert_eq!(kind(b"[1,2]", "text"), ProblemKind::MalformedJson);
        assert_eq!(kind(b"", "text"), ProblemKind::Empty);
        assert_eq!(kind(b" \t\r", "text"), ProblemKind::Empty);
        assert_eq!(
            kind(b"{\"text\": \"\xff\"}", "text"),
            ProblemKind::InvalidUtf8
        );
        assert_eq!(kind(b"{\"body\": \"x\"}", "text"), ProblemKind::MissingText);
        assert_eq!(kind(b"{\"text\": 3}", "text"), ProblemKind::MissingText);
        assert_eq!(
            parse_json_line(b"{\"body\": \"x\"}", "body").unwrap().text,
            "x"
        );
    }
}
