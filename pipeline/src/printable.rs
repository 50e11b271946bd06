//! Text from files, shown on a terminal: control characters (ESC, the C1 range, DEL, ...)
//! are written as escapes (`\u{1b}`), so a manifest, task file, document or tensor name
//! cannot move the cursor, clear the screen, set the window title or fake an output line.

use std::borrow::Cow;

/// `s` on one line: every control character escaped, line breaks and tabs included.
pub fn one_line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// `s` as lines of text: control characters escaped, line breaks and tabs kept.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// A path on one line, for messages: a file name from a folder listing, a manifest or an
/// archive may hold a line break, which would start a line of its own (a fake `error:` or
/// `wrote ...`) in a message that keeps its own line breaks.
pub fn path(p: &std::path::Path) -> String {
    one_line(&p.display().to_string()).into_owned()
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && !keep(c)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c.is_control() && !keep(c) {
                true => c.escape_unicode().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(one_line("plain ▁ text"), "plain ▁ text");
        assert_eq!(
            one_line("\u{1b}[2J\u{9b}x\nfake"),
            "\\u{1b}[2J\\u{9b}x\\u{a}fake"
        );
        assert_eq!(text("a\tb\nc\u{7}"), "a\tb\nc\\u{7}");
        assert!(matches!(text("ok\n"), Cow::Borrowed(_)));
        assert_eq!(
            path(std::path::Path::new("in/x\nerror: fake.jsonl")),
            "in/x\\u{a}error: fake.jsonl"
        );
    }
}
