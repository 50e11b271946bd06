//! The native encoder against the SentencePiece library: identical ids for every document of
//! the real C4 sample, with both real models in ../shared/data/spiece, plus texts chosen to
//! hit the normaliser's and the lattice's corner cases.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use conveyor_pipeline::tokenize::spm::reference::Reference;
use conveyor_pipeline::tokenize::spm::SpmModel;
use conveyor_pipeline::tokenize::Tokenizer;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn c4_texts() -> Vec<String> {
    let f = std::fs::File::open(shared("c4/c4-train.00000-of-01024.first600.json.gz")).unwrap();
    let r = std::io::BufReader::new(flate2::read::GzDecoder::new(f));
    r.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn corner_cases() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "   leading and trailing   ",
        "<pad> </s> <unk> <extra_id_0> are ordinary text",
        "tabs\tand\nnewlines\r\nand\u{3000}ideographic space",
        "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ﬁ ligatures ½ ™ ①",
        "café naïve Ångström e\u{301}",
        "日本語のテキストと中文文本 한국어",
        "emoji 😀🎉👍🏽 and \u{200b}zero\u{200d}width",
        "control \u{1}\u{7f} chars and a NUL \u{0} inside",
        "ααα βββ Привет мир العربية עברית",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "http://example.com/a_b-c?d=e&f=g#h 1,234,567.89 $5 ~/.bashrc",
        "‘quotes’ “double” — dashes – … ellipsis",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every codepoint block sample, to exercise the charsmap widely.
    let mut all = String::new();
    for c in (0x20u32..0x3000).step_by(7).filter_map(char::from_u32) {
        all.push(c);
        if all.len().is_multiple_of(11) {
            all.push(' ');
        }
    }
    v.push(all);
    // Every printable ASCII character before combining marks, which NFKC may fold into it
    // (e\u{301} -> é, =\u{338} -> ≠): the normaliser's ASCII fast path must step aside.
    let mut marks = String::new();
    for c in (0x21u8..0x7f).map(char::from) {
        for m in ['\u{301}', '\u{308}', '\u{338}', '\u{327}', '\u{30a}'] {
            marks.push(c);
            marks.push(m);
            marks.push(c);
            marks.push(' ');
        }
    }
    v.push(marks);
    v
}

fn check_model(model: &str) {
    let path = shared(model);
    let native = SpmModel::open(&path).unwrap();
    let reference = Reference::open(&path).unwrap();
    assert!(
        native.uses_word_cache(),
        "{model}: the word cache should be exact here"
    );
    let mut texts = c4_texts();
    texts.extend(corner_cases());
    // One very long document: a large running score exercises the cache's gap checks.
    texts.push(texts[..200].join("\n"));
    let mut tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        let want = reference.encode(t).unwrap();
        // Twice: the second pass is served from the word cache.
        for pass in 0..2 {
            let got = native.encode(t).unwrap();
            assert_eq!(
                got,
                want,
                "{model}: document {i} differs (pass {pass}): {:?}",
                &t[..t.len().min(80)]
            );
        }
        tokens += want.len();
    }
    assert!(tokens > 100_000, "{model}: only {tokens} tokens checked");
}

#[test]
fn t5_vocabulary_matches_the_library_on_c4() {
    check_model("spiece/t5-spiece.model");
}

#[test]
fn second_real_vocabulary_matches_the_library_on_c4() {
    check_model("spiece/spm-example-20k.model");
}

#[test]
fn vocab_facts_of_t5() {
    let m = SpmModel::open(&shared("spiece/t5-spiece.model")).unwrap();
    let v = m.vocab();
    assert_eq!(v.len(), 32000);
    assert_eq!(
        (v.pad_id, v.eos_id, v.unk_id, v.bos_id),
        (Some(0), Some(1), 2, None)
    );
    let ids = m.encode("Hello world").unwrap();
    assert_eq!(v.decode(&ids), "Hello world");
}
