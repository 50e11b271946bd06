//! The bad-words list: a file of words and phrases (one per line, `#` starts a comment), any
//! of which drops the page. Matched as C4's filter matches: the entry's text (lower-cased)
//! anywhere in the lower-cased page where the characters on either side are not word
//! characters (letters, digits, `_`) or are the page's ends, i.e. `(?:\W|^)(entry)(?:\W|$)`;
//! so "word's" holds "word" and "a_word" does not, and a phrase matches with the spacing it
//! is written with. conveyor ships no list; C4 used the "List of Dirty, Naughty, Obscene, and
//! Otherwise Bad Words" (en), which users point `--badwords` at.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::Error;

pub struct BadWords {
    /// `(?:\W|^)(?:e1|e2|...)(?:\W|$)` over the escaped entries; None for an empty list.
    regex: Option<regex::Regex>,
    pub sha256: String,
}

impl BadWords {
    pub fn read(path: &Path) -> Result<BadWords, Error> {
        let bytes = crate::regular::read(path, crate::regular::MAX_JSON_BYTES)
            .map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| {
            Error::Config(format!(
                "{}: the bad-words list must be UTF-8 text, one word or phrase per line",
                path.display()
            ))
        })?;
        Self::from_lines(&text, crate::manifest::hex(&Sha256::digest(&bytes))).map_err(|e| {
            Error::Config(format!(
                "{}: the bad-words list does not make a matcher ({e}); is it a word list?",
                path.display()
            ))
        })
    }

    pub fn from_lines(text: &str, sha256: String) -> Result<BadWords, regex::Error> {
        let mut entries: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase())
            .filter(|l| !l.is_empty())
            .collect();
        entries.sort();
        entries.dedup();
        let regex = if entries.is_empty() {
            None
        } else {
            let alternatives: Vec<String> = entries.iter().map(|e| regex::escape(e)).collect();
            Some(
                regex::RegexBuilder::new(&format!(
                    r"(?:\W|^)(?:{})(?:\W|$)",
                    alternatives.join("|")
                ))
                .size_limit(256 << 20)
                .build()?,
            )
        };
        Ok(BadWords { regex, sha256 })
    }

    /// Whether any entry occurs in `text` (lower-cased) flanked by non-word characters.
    pub fn matches(&self, text: &str) -> bool {
        self.regex
            .as_ref()
            .is_some_and(|r| r.is_match(&text.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_where_c4s_pattern_does() {
        let b = BadWords::from_lines(
            "# a list\nbadger\nred herring  # two words\nBad Word\n",
            String::new(),
        )
        .unwrap();
        assert!(b.matches("A Badger crossed the road."));
        assert!(b.matches("badger"));
        // An apostrophe is no word character (Python's \W): "badger's" holds "badger".
        assert!(b.matches("The badger's sett."));
        assert!(b.matches("It was a red herring all along."));
        assert!(b.matches("a BAD WORD"));
        // Parts of words, an underscore (a word character), a phrase spaced otherwise.
        assert!(!b.matches("Badgers and a red car; a herring."));
        assert!(!b.matches("my_badger"));
        assert!(!b.matches("It was a red\nherring all along."));
        assert!(!BadWords::from_lines("# nothing\n", String::new())
            .unwrap()
            .matches("anything"));
    }
}
