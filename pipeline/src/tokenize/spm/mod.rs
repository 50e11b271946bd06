//! SentencePiece vocabularies: a native unigram encoder that gives exactly the library's ids,
//! and the library itself (through the `sentencepiece` crate) as the reference.

mod cache;
pub mod normalizer;
pub mod proto;
pub mod reference;
mod trie;
pub mod unigram;

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memchr::memmem::Finder;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::tokenize::{Tokenizer, Vocab};
use cache::WordCache;
use normalizer::{Normalizer, SPACE_SYMBOL};
use proto::{ModelType, PieceType};
use unigram::{PieceInfo, Scratch, Tok, Unigram};

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// Per-thread state: the word cache of each loaded model, and scratch buffers.
#[derive(Default)]
struct ThreadState {
    model_id: u64,
    cache: WordCache,
    scratch: Scratch,
    normalized: Vec<u8>,
    toks: Vec<Tok>,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

/// A SentencePiece unigram model encoded natively.
pub struct SpmModel {
    id: u64,
    vocab: Vocab,
    pub(crate) normalizer: Normalizer,
    unigram: Unigram,
    /// A searcher for the whitespace symbol that separates words, when the word cache is
    /// exact.
    word_boundary: Option<Finder<'static>>,
    suffix: bool,
    /// Byte-fallback piece ids, when the model has them.
    byte_ids: Option<Box<[u32; 256]>>,
}

impl SpmModel {
    /// Loads a `.model` file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let bytes = super::read_model(path)?;
        Self::from_bytes(&bytes, path)
    }

    /// Builds the encoder from a serialised model; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Vocab {
            path: path.to_path_buf(),
            reason,
        };
        let m = proto::parse_model(bytes).map_err(|e| bad(e.0))?;
        if m.trainer.model_type != ModelType::Unigram {
            return Err(bad(format!(
                "the native encoder supports unigram models, this one is {:?}; use --tokenizer reference",
                m.trainer.model_type
            )));
        }
        let unk_id = m
            .pieces
            .iter()
            .position(|p| p.kind == PieceType::Unknown)
            .ok_or_else(|| bad("the model defines no <unk> piece".into()))?;
        let mut seen = ahash::AHashSet::new();
        for p in &m.pieces {
            if p.piece.is_empty() || !seen.insert(p.piece.as_str()) {
                return Err(bad(format!(
                    "piece {:?} is empty or defined twice",
                    p.piece
                )));
            }
        }
        let suffix = m.trainer.treat_whitespace_as_suffix;
        let user_symbols = m
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::UserDefined)
            .map(|p| p.piece.as_bytes().to_vec())
            .collect();
        let normalizer =
            Normalizer::new(&m.normalizer, user_symbols, suffix).map_err(|e| bad(e.0))?;
        let unigram = Unigram::new(
            m.pieces.iter().map(|p| PieceInfo {
                bytes: p.piece.as_bytes(),
                score: p.score,
                in_trie: matches!(
                    p.kind,
                    PieceType::Normal | PieceType::UserDefined | PieceType::Unused
                ),
                user_defined: p.kind == PieceType::UserDefined,
                unused: p.kind == PieceType::Unused,
                normal: p.kind == PieceType::Normal,
            }),
            unk_id as u32,
        );
        let boundary: &'static [u8] = if m.normalizer.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        // The cache is exact only if no lattice piece holds the boundary inside it.
        let splits = m.pieces.iter().any(|p| {
            matches!(p.kind, PieceType::Normal | PieceType::UserDefined)
                && crosses_boundary(p.piece.as_bytes(), boundary, suffix)
        });
        let byte_ids = if m.trainer.byte_fallback {
            let mut ids = Box::new([unk_id as u32; 256]);
            for (i, p) in m.pieces.iter().enumerate() {
                if p.kind == PieceType::Byte {
                    if let Some(b) = parse_byte_piece(&p.piece) {
                        ids[b as usize] = i as u32;
                    }
                }
            }
            Some(ids)
        } else {
            None
        };
        let find = |k: PieceType, name: &str| {
            m.pieces
                .iter()
                .position(|p| p.kind == k && p.piece == name)
                .map(|i| i as u32)
        };
        let vocab = Vocab {
            pieces: m.pieces.iter().map(|p| p.piece.clone()).collect(),
            control: m
                .pieces
                .iter()
                .map(|p| matches!(p.kind, PieceType::Control | PieceType::Unknown))
                .collect(),
            unk_id: unk_id as u32,
            eos_id: find(PieceType::Control, "</s>"),
            pad_id: find(PieceType::Control, "<pad>"),
            bos_id: find(PieceType::Control, "<s>"),
            sha256: crate::manifest::hex(&Sha256::digest(bytes)),
        };
        Ok(Self {
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            vocab,
            normalizer,
            unigram,
            word_boundary: (!splits).then(|| Finder::new(boundary)),
            suffix,
            byte_ids,
        })
    }

    /// Whether the exact word cache is in use for this model.
    pub fn uses_word_cache(&self) -> bool {
        self.word_boundary.is_some()
    }

    /// SentencePiece's normalised form of `text` (spaces escaped as `▁`).
    pub fn normalize(&self, text: &str) -> String {
        let mut out = Vec::new();
        self.normalizer.normalize(text, &mut out);
        String::from_utf8(out).expect("normalisation keeps UTF-8")
    }

    /// Encodes the normalised `text` into tokens, word by word through the cache.
    fn encode_words(&self, st: &mut ThreadState, boundary: &Finder, out: &mut Vec<Tok>) {
        let ThreadState {
            cache,
            scratch,
            normalized,
            ..
        } = st;
        let text = &normalized[..];
        let mut prefix = 0f32;
        let mut start = 0;
        while start < text.len() {
            let end = next_boundary(text, start, boundary, self.suffix);
            let word = &text[start..end];
            start = end;
            let (toks, gap) = cache.path(word, |toks| {
                self.unigram.viterbi(word, 0.0, scratch, toks).0
            });
            if self.unigram.gap_is_safe(gap, prefix, word.len()) {
                for t in toks {
                    prefix = self.unigram.advance(prefix, t);
                }
                out.extend_from_slice(toks);
            } else {
                prefix = self.unigram.viterbi(word, prefix, scratch, out).1;
            }
        }
    }

    /// Turns the best path into ids as `PopulateSentencePieceText` does: runs of unknown
    /// pieces merge into one `<unk>`, or become byte pieces under byte fallback.
    fn emit(&self, toks: &[Tok], normalized: &[u8], out: &mut Vec<u32>) {
        let unk = self.unigram.unk_id();
        let mut pos = 0usize;
        let mut prev_unk = false;
        for t in toks {
            let is_unk = t.id == unk;
            match (&self.byte_ids, is_unk) {
                (Some(bytes), true) => {
                    for &b in &normalized[pos..pos + t.len as usize] {
                        out.push(bytes[b as usize]);
                    }
                }
                _ if is_unk && prev_unk => {}
                _ => out.push(t.id),
            }
            pos += t.len as usize;
            prev_unk = is_unk;
        }
    }
}

impl Tokenizer for SpmModel {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn encode_into(
        &self,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), crate::tokenize::EncodeError> {
        STATE.with(|cell| {
            let mut st = cell.borrow_mut();
            if st.model_id != self.id {
                st.cache.clear();
                st.model_id = self.id;
            }
            let mut toks = std::mem::take(&mut st.toks);
            toks.clear();
            let mut normalized = std::mem::take(&mut st.normalized);
            self.normalizer.normalize(text, &mut normalized);
            st.normalized = normalized;
            match &self.word_boundary {
                Some(b) => self.encode_words(&mut st, b, &mut toks),
                None => {
                    let ThreadState {
                        scratch,
                        normalized,
                        ..
                    } = &mut *st;
                    self.unigram.viterbi(normalized, 0.0, scratch, &mut toks);
                }
            }
            self.emit(&toks, &st.normalized, out);
            st.toks = toks;
        });
        Ok(())
    }
}

/// End of the word starting at `start`: before the next boundary symbol (prefix mode) or
/// just after the next one (suffix mode).
fn next_boundary(text: &[u8], start: usize, boundary: &Finder, suffix: bool) -> usize {
    let from = if suffix { start } else { start + 1 };
    match boundary.find(&text[from.min(text.len())..]) {
        Some(i) if suffix => from + i + boundary.needle().len(),
        Some(i) => from + i,
        None => text.len(),
    }
}

/// Whether a piece holds the boundary symbol anywhere but at its word edge.
fn crosses_boundary(piece: &[u8], boundary: &[u8], suffix: bool) -> bool {
    let hits: Vec<usize> = memchr::memmem::find_iter(piece, boundary).collect();
    hits.iter().any(|&i| {
        if suffix {
            i + boundary.len() != piece.len()
        } else {
            i != 0
        }
    })
}

/// `<0x41>` -> 0x41.
fn parse_byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_before_each_space_symbol() {
        let t = "▁ab▁c".as_bytes();
        let b = &Finder::new(SPACE_SYMBOL.as_bytes());
        let first = next_boundary(t, 0, b, false);
        assert_eq!(&t[..first], "▁ab".as_bytes());
        assert_eq!(next_boundary(t, first, b, false), t.len());
        let t = "ab▁c▁".as_bytes();
        let first = next_boundary(t, 0, b, true);
        assert_eq!(&t[..first], "ab▁".as_bytes());
    }

    #[test]
    fn detects_pieces_that_cross_words() {
        let b = SPACE_SYMBOL.as_bytes();
        assert!(!crosses_boundary("▁the".as_bytes(), b, false));
        assert!(crosses_boundary("a▁b".as_bytes(), b, false));
        assert!(crosses_boundary("▁▁".as_bytes(), b, false));
        assert!(!crosses_boundary("the▁".as_bytes(), b, true));
    }

    #[test]
    fn byte_pieces_parse() {
        assert_eq!(parse_byte_piece("<0x0A>"), Some(10));
        assert_eq!(parse_byte_piece("<0xZZ>"), None);
    }
}
