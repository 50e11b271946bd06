//! The bad-words list: a file of words and phrases (one per line, `#` starts a comment), any
//! of which, as whole words in the lower-cased page, drops the page. conveyor ships no list;
//! C4 used the "List of Dirty, Naughty, Obscene, and Otherwise Bad Words" (en), which users
//! point `--badwords` at.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::Error;

pub struct BadWords {
    /// Each entry as its words.
    phrases: HashSet<Vec<String>>,
    longest: usize,
    pub sha256: String,
}

/// Lower-cased words: runs of letters, digits and apostrophes.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The longest bad-words phrase, in words (LDNOOBW's longest has 4).
const MAX_PHRASE_WORDS: usize = 16;

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
        let list = Self::from_lines(&text, crate::manifest::hex(&Sha256::digest(&bytes)));
        // Matching tries every window up to the longest phrase at every word: a phrase of
        // hundreds of words made clean crawl (38 s for 600 pages at 300 words).
        if list.longest > MAX_PHRASE_WORDS {
            return Err(Error::Config(format!(
                "{}: a bad-words phrase of {} words; phrases are at most {MAX_PHRASE_WORDS} words",
                path.display(),
                list.longest
            )));
        }
        Ok(list)
    }

    pub fn from_lines(text: &str, sha256: String) -> BadWords {
        let phrases: HashSet<Vec<String>> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(words)
            .filter(|w| !w.is_empty())
            .collect();
        let longest = phrases.iter().map(Vec::len).max().unwrap_or(0);
        BadWords {
            phrases,
            longest,
            sha256,
        }
    }

    /// Whether any entry occurs in `text` as whole words.
    pub fn matches(&self, text: &str) -> bool {
        let w = words(text);
        (1..=self.longest).any(|n| w.windows(n).any(|win| self.phrases.contains(win)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_and_phrases_match_and_parts_of_words_do_not() {
        let b = BadWords::from_lines(
            "# a list\nbadger\nred herring  # two words\n",
            String::new(),
        );
        assert!(b.matches("A Badger crossed the road."));
        assert!(b.matches("It was a red\nherring all along."));
        assert!(!b.matches("Badgers and a red car; a herring."));
    }
}
