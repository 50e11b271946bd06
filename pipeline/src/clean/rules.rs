//! The C4 cleaning rules (the TFDS `c4_utils` heuristics, as listed in docs/upstream.md, section 1),
//! each a switch or a threshold, applied to one page: line filters, then page filters. What
//! each rule removed is counted by name, for the manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The rules and their thresholds (C4's values by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Pages longer than this (in characters) are dropped.
    pub max_page_chars: usize,
    /// A line with a word longer than this (characters) is dropped.
    pub max_word_chars: usize,
    /// Lines with fewer words are dropped.
    pub min_words_per_line: usize,
    /// Pages with fewer sentences (after the line filters) are dropped.
    pub min_sentences: usize,
    /// Keep only lines ending in `.`, `?`, `!` or `"` (and not in `...`).
    pub terminal_punctuation: bool,
    /// Remove citation marks: `[1]`, `[12]`, `[edit]`, `[citation needed]`.
    pub strip_citations: bool,
    /// Lines mentioning "javascript" are dropped.
    pub javascript: bool,
    /// Lines with policy boilerplate (terms of use, privacy/cookie policy, cookies) are dropped.
    pub policy: bool,
    /// Pages containing "lorem ipsum" are dropped.
    pub lorem_ipsum: bool,
    /// Pages containing `{` (code) are dropped.
    pub curly_brace: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_page_chars: 190_000,
            max_word_chars: 1000,
            min_words_per_line: 5,
            min_sentences: 3,
            terminal_punctuation: true,
            strip_citations: true,
            javascript: true,
            policy: true,
            lorem_ipsum: true,
            curly_brace: true,
        }
    }
}

const POLICY: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// Why a page was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageDrop {
    TooLong,
    LoremIpsum,
    CurlyBrace,
    TooFewSentences,
    NotEnglish,
    BadWords,
    AllLinesDuplicate,
    /// Fewer than `min_sentences` sentences left after line dedup.
    TooFewSentencesAfterDedup,
}

/// Why a line was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineDrop {
    LongWord,
    NoTerminalPunctuation,
    TooFewWords,
    Javascript,
    Policy,
    Duplicate,
}

/// Counts per rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleCounts {
    pub pages_in: u64,
    pub pages_out: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    pub pages_dropped: BTreeMap<PageDrop, u64>,
    pub lines_dropped: BTreeMap<LineDrop, u64>,
}

impl RuleCounts {
    pub fn add(&mut self, o: &RuleCounts) {
        self.pages_in += o.pages_in;
        self.pages_out += o.pages_out;
        self.lines_in += o.lines_in;
        self.lines_out += o.lines_out;
        for (k, v) in &o.pages_dropped {
            *self.pages_dropped.entry(*k).or_default() += v;
        }
        for (k, v) in &o.lines_dropped {
            *self.lines_dropped.entry(*k).or_default() += v;
        }
    }
}

/// Removes `[digits]`, `[edit]` and `[citation needed]` (any case) from a line.
pub fn strip_citations(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let close = tail.find(']');
        let mark = close.map(|j| &tail[1..j]).filter(|inner| {
            (!inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()))
                || inner.eq_ignore_ascii_case("edit")
                || inner.eq_ignore_ascii_case("citation needed")
        });
        match (mark, close) {
            (Some(_), Some(j)) => rest = &tail[j + 1..],
            _ => {
                out.push('[');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sentences in `text`: runs ending in `.`, `!` or `?` (closing quotes or brackets may
/// follow) before whitespace or the end, plus a last unterminated run. An approximation of
/// the sentence tokenizer C4 used (nltk's punkt): abbreviations such as "Dr." count as ends.
/// The lines of `text` as Python's `str.splitlines()` (which C4's `clean_page` uses) cuts
/// them: at `\n`, `\r`, `\r\n`, `\x0b`, `\x0c`, `\x1c`-`\x1e`, `\u{85}`, `\u{2028}`,
/// `\u{2029}`; no empty line after a final break.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let is_break = |c: char| {
        matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    };
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(at) = rest.find(is_break) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        let brk = rest[at..].chars().next().expect("a break");
        let mut next = at + brk.len_utf8();
        if brk == '\r' && rest[next..].starts_with('\n') {
            next += 1;
        }
        rest = &rest[next..];
        Some(line)
    })
}

pub fn count_sentences(text: &str) -> usize {
    let chars: Vec<char> = text.chars().collect();
    let mut n = 0;
    let mut in_sentence = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len()
                && matches!(chars[j], '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’')
            {
                j += 1;
            }
            if (j == chars.len() || chars[j].is_whitespace()) && in_sentence {
                n += 1;
                in_sentence = false;
            }
            i = j;
            continue;
        }
        if !c.is_whitespace() {
            in_sentence = true;
        }
        i += 1;
    }
    n + usize::from(in_sentence)
}

/// The line filters and the page filters that need no corpus-wide state. Returns the kept
/// lines, or why the page is dropped; adds what it removed to `counts`.
pub fn clean_page(
    text: &str,
    rules: &Rules,
    counts: &mut RuleCounts,
) -> Result<Vec<String>, PageDrop> {
    counts.pages_in += 1;
    let drop_page = |counts: &mut RuleCounts, why| {
        *counts.pages_dropped.entry(why).or_default() += 1;
        Err(why)
    };
    if text.chars().count() > rules.max_page_chars {
        return drop_page(counts, PageDrop::TooLong);
    }
    let mut kept = Vec::new();
    for raw in split_lines(text) {
        counts.lines_in += 1;
        let line = raw.trim();
        let drop_line = |counts: &mut RuleCounts, why| {
            *counts.lines_dropped.entry(why).or_default() += 1;
        };
        if line
            .split_whitespace()
            .any(|w| w.chars().count() > rules.max_word_chars)
        {
            drop_line(counts, LineDrop::LongWord);
            continue;
        }
        let line = if rules.strip_citations {
            strip_citations(line).trim().to_string()
        } else {
            line.to_string()
        };
        if rules.terminal_punctuation
            && (!line.ends_with(['.', '?', '!', '"']) || line.ends_with("..."))
        {
            drop_line(counts, LineDrop::NoTerminalPunctuation);
            continue;
        }
        if line.split_whitespace().count() < rules.min_words_per_line {
            drop_line(counts, LineDrop::TooFewWords);
            continue;
        }
        let lower = line.to_lowercase();
        if rules.lorem_ipsum && lower.contains("lorem ipsum") {
            return drop_page(counts, PageDrop::LoremIpsum);
        }
        if rules.javascript && lower.contains("javascript") {
            drop_line(counts, LineDrop::Javascript);
            continue;
        }
        if rules.curly_brace && line.contains('{') {
            return drop_page(counts, PageDrop::CurlyBrace);
        }
        if rules.policy && POLICY.iter().any(|p| lower.contains(p)) {
            drop_line(counts, LineDrop::Policy);
            continue;
        }
        kept.push(line);
    }
    if count_sentences(&kept.join("\n")) < rules.min_sentences {
        return drop_page(counts, PageDrop::TooFewSentences);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "The river rises in the hills above the town.";

    fn page(lines: &[&str]) -> String {
        lines.join("\n")
    }

    fn run(text: &str) -> (Result<Vec<String>, PageDrop>, RuleCounts) {
        let mut c = RuleCounts::default();
        (clean_page(text, &Rules::default(), &mut c), c)
    }

    #[test]
    fn citations_are_stripped_and_other_brackets_kept() {
        assert_eq!(
            strip_citations("It flows[1] north[edit] fast[Citation needed]."),
            "It flows north fast."
        );
        assert_eq!(
            strip_citations("See [a] and [12a] and [ and ]."),
            "See [a] and [12a] and [ and ]."
        );
    }

    #[test]
    fn lines_are_cut_where_python_splitlines_cuts_them() {
        fn cut(t: &str) -> Vec<&str> {
            split_lines(t).collect()
        }
        assert_eq!(cut("a\nb\r\nc\rd\u{2028}e"), ["a", "b", "c", "d", "e"]);
        assert_eq!(
            cut("a\x0b\x0cb\x1c\x1d\x1ec\u{85}d\u{2029}"),
            ["a", "", "b", "", "", "c", "d"]
        );
        assert_eq!(cut("a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(cut("\r\n"), [""]);
        assert!(cut("").is_empty());
    }

    #[test]
    fn sentences_are_counted_at_terminal_punctuation() {
        assert_eq!(count_sentences("One. Two! Three? Four"), 4);
        assert_eq!(count_sentences("It cost 3.5 dollars. \"Yes.\" Done"), 3);
        assert_eq!(count_sentences(""), 0);
    }

    #[test]
    fn every_line_rule_drops_its_lines_and_counts_them() {
        let long = format!("A {} word in this line.", "x".repeat(1001));
        let text = page(&[
            GOOD,
            "No terminal punctuation in this line here",
            "It trails off into nothing at all...",
            "Too short.",
            "Please enable JavaScript to view this site properly.",
            "Read our privacy policy before you sign up here.",
            &long,
            "Its source is a spring[1] under an old oak.",
            "The valley floods nearly every single spring.",
        ]);
        let (kept, c) = run(&text);
        let kept = kept.unwrap();
        assert_eq!(
            kept,
            vec![
                GOOD,
                "Its source is a spring under an old oak.",
                "The valley floods nearly every single spring."
            ]
        );
        let d = &c.lines_dropped;
        assert_eq!(d[&LineDrop::NoTerminalPunctuation], 2);
        assert_eq!(d[&LineDrop::TooFewWords], 1);
        assert_eq!(d[&LineDrop::Javascript], 1);
        assert_eq!(d[&LineDrop::Policy], 1);
        assert_eq!(d[&LineDrop::LongWord], 1);
        assert_eq!((c.lines_in, c.pages_in), (9, 1));
    }

    #[test]
    fn page_rules_drop_whole_pages() {
        let three = [GOOD, GOOD, GOOD];
        assert!(run(&page(&three)).0.is_ok());
        let with = |extra: &str| {
            let mut v = three.to_vec();
            v.push(extra);
            run(&page(&v)).0
        };
        assert_eq!(
            with("Lorem ipsum dolor sit amet, consectetur adipiscing."),
            Err(PageDrop::LoremIpsum)
        );
        assert_eq!(
            with("The function returns { a value } to the caller."),
            Err(PageDrop::CurlyBrace)
        );
        assert_eq!(run(&page(&[GOOD, GOOD])).0, Err(PageDrop::TooFewSentences));
        assert_eq!(run(&GOOD.repeat(5000)).0, Err(PageDrop::TooLong));
        // Thresholds are parameters.
        let mut c = RuleCounts::default();
        let loose = Rules {
            min_sentences: 2,
            ..Rules::default()
        };
        assert!(clean_page(&page(&[GOOD, GOOD]), &loose, &mut c).is_ok());
    }
}
