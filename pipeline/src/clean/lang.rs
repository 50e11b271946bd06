//! The English filter: `whatlang`'s trigram language identifier. C4 kept pages that
//! `langdetect` called English with probability >= 0.99; whatlang's confidence is another
//! model's score on the same 0..1 scale, so the same threshold is used but its pass rate
//! differs (measured on the C4 sample: see the README).

/// C4's threshold.
pub const C4_MIN_ENGLISH: f64 = 0.99;

/// Whether `text` is English with at least `min` confidence.
pub fn is_english(text: &str, min: f64) -> bool {
    whatlang::detect(text).is_some_and(|i| i.lang() == whatlang::Lang::Eng && i.confidence() >= min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_passes_and_other_languages_do_not() {
        let en = "The river rises in the hills above the town and flows north through the valley, where it floods nearly every spring.";
        let es = "El río nace en las colinas sobre el pueblo y fluye hacia el norte por el valle, donde se desborda casi cada primavera.";
        assert!(is_english(en, C4_MIN_ENGLISH));
        assert!(!is_english(es, 0.5));
        assert!(!is_english("", 0.0));
    }
}
