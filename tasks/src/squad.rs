//! SQuAD's answer scoring (v1.1's evaluation script, as T5's `qa_utils` repeats it): answers
//! are compared after normalisation (lower case, ASCII punctuation removed, the words "a",
//! "an", "the" removed, white space collapsed), by exact match and by the F1 of their shared
//! words; a prediction scores the best it gets against any of its reference answers.

use std::collections::HashMap;

/// Python's `\w`: `str.isalnum()` (general categories L* and N*, not the marks and symbols
/// Rust's `is_alphanumeric` also counts as Other_Alphabetic: Indic vowel signs, Hebrew
/// points, circled letters) or `_`.
fn word_char(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    c == '_'
        || matches!(
            get_general_category(c),
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::DecimalNumber
                | G::LetterNumber
                | G::OtherNumber
        )
}

/// Python's `str.split()`: white space as `str.isspace` has it, which counts the four
/// information separators (U+001C to U+001F) that Unicode's White_Space does not.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
}

/// SQuAD's normalisation: lower case, ASCII punctuation dropped, the articles removed as
/// whole words (`\b(a|an|the)\b`, replaced by a space), runs of white space made one.
pub fn normalize(text: &str) -> String {
    let lowered: Vec<char> = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Articles between word boundaries: a maximal run of word characters that is one.
    let mut spaced = String::with_capacity(lowered.len());
    let mut i = 0;
    while i < lowered.len() {
        if !word_char(lowered[i]) {
            spaced.push(lowered[i]);
            i += 1;
            continue;
        }
        let end = (i..lowered.len())
            .find(|&j| !word_char(lowered[j]))
            .unwrap_or(lowered.len());
        let word: String = lowered[i..end].iter().collect();
        match word.as_str() {
            "a" | "an" | "the" => spaced.push(' '),
            _ => spaced.push_str(&word),
        }
        i = end;
    }
    words(&spaced).collect::<Vec<_>>().join(" ")
}

/// The F1 of the words two normalised answers share (each word counted as often as both
/// have it); 0 when they share none, as the script scores it (two empty answers included).
pub fn token_f1(reference: &str, prediction: &str) -> f64 {
    let (p, r): (Vec<&str>, Vec<&str>) = (words(prediction).collect(), words(reference).collect());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &r {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0usize;
    for w in &p {
        if let Some(n) = counts.get_mut(w).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// (exact match, F1) of one prediction: the best over its references (none: 0).
pub fn best(prediction: &str, references: &[&str]) -> (bool, f64) {
    let p = normalize(prediction);
    references.iter().fold((false, 0.0), |(em, f1), r| {
        let r = normalize(r);
        (em || r == p, f1.max(token_f1(&r, &p)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_f1_by_hand() {
        assert_eq!(
            normalize("  The Eiffel-Tower, in PARIS!  "),
            "eiffeltower in paris"
        );
        // Articles only as whole words ("then", "another" stay), also beside non-ASCII
        // punctuation, which is kept.
        assert_eq!(
            normalize("a cat, an apple and then another"),
            "cat apple and then another"
        );
        assert_eq!(normalize("the’s a’b"), "’s ’b");
        assert_eq!(normalize("ÉTÉ à Ça"), "été à ça");
        // Marks and symbols are no word characters to Python: the article before them is a
        // word of its own (a Devanagari vowel sign, a Hebrew point, a squared letter).
        for (text, left) in [
            ("a\u{93e}", "\u{93e}"),
            ("the\u{5b0} x", "\u{5b0} x"),
            ("the🄰", "🄰"),
        ] {
            assert_eq!(normalize(text), left, "{text:?}");
        }
        // Shared words: "paris" once of the prediction's 3 words and the reference's 2.
        let f1 = token_f1("in paris", "paris france city");
        assert!((f1 - 2.0 * (1.0 / 3.0) * 0.5 / (1.0 / 3.0 + 0.5)).abs() < 1e-12);
        // A word counted as often as both have it.
        assert_eq!(
            token_f1("a a b", "a a a"),
            2.0 * (2.0 / 3.0) * (2.0 / 3.0) / (4.0 / 3.0)
        );
        assert_eq!(token_f1("", ""), 0.0);
        // The best reference counts.
        assert_eq!(
            best("The Louvre", &["louvre museum", "Louvre"]),
            (true, 1.0)
        );
        assert_eq!(best("x", &[]), (false, 0.0));
    }
}
