//! The unigram Viterbi encoder, bit-exact with SentencePiece's `EncodeOptimized` as of 0.2.1,
//! the release the `sentencepiece` crate vendors. There a piece candidate is summed in `f64`
//! and compared with the `f32` stored at its end position; later releases changed that
//! arithmetic, which shows only on exact ties such as `S SS SS` against `SS SS S`.
//!
//! SentencePiece runs one Viterbi pass over the whole normalised document, accumulating path
//! scores in `f32`. When no piece contains the whitespace symbol except at its edge (T5's
//! `split_by_whitespace` vocabularies), every path passes through every word boundary, so the
//! best path of a document is the concatenation of the best paths of its words. That allows
//! a word cache, with one caveat: the library compares `prefix + a + b` against `prefix + c`
//! in `f32`, and rounding at a large prefix can flip a near-tie that a word-local pass decides
//! the other way. Each cached word therefore records the smallest score gap of any decision
//! made inside it; a cached answer is used only when that gap exceeds a bound on the rounding
//! error at the current prefix, and otherwise the word is re-run with the document's real
//! prefix score, exactly as the library would. The cache never changes the output.

use super::trie::{Piece, PieceTrie};

/// SentencePiece's penalty below the lowest piece score for an unknown character.
const UNK_PENALTY: f32 = 10.0;

/// One token of a best path: its id, its length in normalised bytes, and the amount the
/// library adds to the running path score for it.
#[derive(Clone, Copy, Debug)]
pub struct Tok {
    pub id: u32,
    pub len: u32,
    score: f32,
    /// User-defined symbols are scored in `f64` by the library (`len * max_score - 0.1`).
    user: bool,
}

impl Tok {
    #[cfg(test)]
    pub(crate) fn new(id: u32, len: u32, score: f32) -> Tok {
        Tok {
            id,
            len,
            score,
            user: false,
        }
    }

    /// The running path score after this token, rounded as the library rounds it.
    #[inline]
    fn add_to(&self, prefix: f32, user_score: f64) -> f32 {
        if self.user {
            (user_score + prefix as f64) as f32
        } else {
            self.score + prefix
        }
    }
}

/// What the lattice keeps per end position.
#[derive(Clone, Copy)]
struct Best {
    score: f32,
    /// The exact (f64) score of the same path without the prefix, for the gap bookkeeping.
    exact: f64,
    start: u32,
    id: i32,
    user: bool,
    set: bool,
}

/// A word's best path and the smallest decision gap met while finding it.
pub struct Path {
    pub toks: Vec<Tok>,
    pub min_gap: f64,
}

/// The scoring tables of a unigram model.
pub struct Unigram {
    /// The lattice's pieces (normal and user-defined; unused pieces never match).
    trie: PieceTrie,
    scores: Vec<f32>,
    unk_id: u32,
    unk_score: f32,
    max_score: f32,
    max_abs_score: f64,
}

/// Per-thread working memory for [`Unigram::viterbi`].
#[derive(Default)]
pub struct Scratch(Vec<Best>);

/// What the encoder needs to know about each piece.
pub struct PieceInfo<'a> {
    pub bytes: &'a [u8],
    pub score: f32,
    /// In the lattice at all (normal, user-defined or unused pieces).
    pub in_trie: bool,
    pub user_defined: bool,
    pub unused: bool,
    /// A normal piece (min/max scores are taken over these).
    pub normal: bool,
}

impl Unigram {
    pub fn new<'a>(pieces: impl IntoIterator<Item = PieceInfo<'a>>, unk_id: u32) -> Self {
        let mut scores = Vec::new();
        let mut trie_items = Vec::new();
        // SentencePiece starts from FLT_MAX / FLT_MIN (the smallest positive float).
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE;
        for (i, p) in pieces.into_iter().enumerate() {
            scores.push(p.score);
            if p.normal {
                min_score = min_score.min(p.score);
                max_score = max_score.max(p.score);
            }
            // The library's lattice skips unused pieces where it meets them; leaving them out
            // of the trie does the same.
            if p.in_trie && !p.unused {
                let piece = Piece {
                    id: i as i32,
                    score: p.score,
                    user: p.user_defined,
                };
                trie_items.push((p.bytes, piece));
            }
        }
        let unk_score = min_score - UNK_PENALTY;
        let max_abs_score = scores
            .iter()
            .map(|s| s.abs() as f64)
            .fold(unk_score.abs() as f64, f64::max)
            .max(1.0);
        Self {
            trie: PieceTrie::new(trie_items),
            scores,
            unk_id,
            unk_score,
            max_score,
            max_abs_score,
        }
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    fn user_score(&self, len: usize) -> f64 {
        (len as f32 * self.max_score) as f64 - 0.1
    }

    /// The score after appending `tok` to a path that scored `prefix`.
    #[inline]
    pub fn advance(&self, prefix: f32, tok: &Tok) -> f32 {
        tok.add_to(prefix, self.user_score(tok.len as usize))
    }

    /// Whether a cached path whose smallest decision gap is `gap` gives the library's answer
    /// after a prefix scoring `prefix`, for a word of `len` bytes. Each compared value in the
    /// library carries at most one rounding (half an ulp of the running magnitude M) per token
    /// of its path, and a word has at most `len` tokens, so two compared values differ from
    /// the exact ones by less than (len + 1) ulp(M) together; the gap must exceed that, with a
    /// factor of two to spare.
    #[inline]
    pub fn gap_is_safe(&self, gap: f64, prefix: f32, len: usize) -> bool {
        let n = len as f64 + 1.0;
        let magnitude = prefix.abs() as f64 + n * self.max_abs_score;
        gap > 2.0 * n * f32::EPSILON as f64 * magnitude
    }

    /// Runs the library's Viterbi over `text` (normalised bytes) starting from a path score of
    /// `prefix`, appending the best path to `out`. Returns the smallest gap between competing
    /// candidates (infinity when nothing competed) and the final path score.
    pub fn viterbi(
        &self,
        text: &[u8],
        prefix: f32,
        scratch: &mut Scratch,
        out: &mut Vec<Tok>,
    ) -> (f64, f32) {
        let size = text.len();
        if size == 0 {
            return (f64::INFINITY, prefix);
        }
        let best = &mut scratch.0;
        best.clear();
        let unset = Best {
            score: 0.0,
            exact: 0.0,
            start: 0,
            id: -1,
            user: false,
            set: false,
        };
        best.resize(size + 1, unset);
        best[0] = Best {
            score: prefix,
            set: true,
            ..unset
        };
        let mut min_gap = f64::INFINITY;
        let mut start = 0usize;
        while start < size {
            let here = best[start];
            let mblen = super::normalizer::utf8_len(text[start]).min(size - start);
            let mut has_single = false;
            self.trie.for_each_prefix(&text[start..], |len, p| {
                let (id, user) = (p.id, p.user);
                // The library's `score` is a double (the conditional mixes the user-defined
                // double with the float piece score), so candidates are compared unrounded
                // against the stored float and only rounded when stored.
                let piece = if user {
                    self.user_score(len)
                } else {
                    p.score as f64
                };
                let cand = piece + here.score as f64;
                let piece_exact = piece;
                let exact = here.exact + piece_exact;
                let target = &mut best[start + len];
                if target.set {
                    min_gap = min_gap.min((exact - target.exact).abs());
                }
                if !target.set || cand > target.score as f64 {
                    *target = Best {
                        score: cand as f32,
                        exact,
                        start: start as u32,
                        id,
                        user,
                        set: true,
                    };
                }
                if len == mblen {
                    has_single = true;
                }
            });
            if !has_single {
                let cand = self.unk_score + here.score;
                let exact = here.exact + self.unk_score as f64;
                let target = &mut best[start + mblen];
                if target.set {
                    min_gap = min_gap.min((exact - target.exact).abs());
                }
                if !target.set || cand > target.score {
                    *target = Best {
                        score: cand,
                        exact,
                        start: start as u32,
                        id: self.unk_id as i32,
                        user: false,
                        set: true,
                    };
                }
            }
            start += mblen;
        }
        let first = out.len();
        let mut end = size;
        while end > 0 {
            let b = best[end];
            let len = end - b.start as usize;
            let id = b.id as u32;
            // `<unk>` is never in the trie, so a node holding its id came from the unknown path.
            let score = if id == self.unk_id {
                self.unk_score
            } else {
                self.scores[id as usize]
            };
            out.push(Tok {
                id,
                len: len as u32,
                score,
                user: b.user,
            });
            end = b.start as usize;
        }
        out[first..].reverse();
        (min_gap, best[size].score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pieces: &[(&str, f32)]) -> Unigram {
        let mut infos = vec![PieceInfo {
            bytes: b"<unk>",
            score: 0.0,
            in_trie: false,
            user_defined: false,
            unused: false,
            normal: false,
        }];
        for (p, s) in pieces {
            infos.push(PieceInfo {
                bytes: p.as_bytes(),
                score: *s,
                in_trie: true,
                user_defined: false,
                unused: false,
                normal: true,
            });
        }
        Unigram::new(infos, 0)
    }

    fn ids(m: &Unigram, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        m.viterbi(s.as_bytes(), 0.0, &mut Scratch::default(), &mut out);
        out.iter().map(|t| t.id).collect()
    }

    #[test]
    fn picks_the_best_segmentation() {
        let m = model(&[
            ("a", -1.0),
            ("b", -1.0),
            ("ab", -1.5),
            ("abc", -5.0),
            ("c", -1.0),
        ]);
        assert_eq!(ids(&m, "abc"), vec![3, 5]);
        assert_eq!(ids(&m, "ba"), vec![2, 1]);
    }

    #[test]
    fn unknown_characters_become_unk() {
        let m = model(&[("a", -1.0)]);
        assert_eq!(ids(&m, "aéa"), vec![1, 0, 1]);
    }

    #[test]
    fn reports_close_decisions() {
        let m = model(&[("a", -1.0), ("aa", -2.0)]);
        let mut out = Vec::new();
        let (gap, _) = m.viterbi(b"aa", 0.0, &mut Scratch::default(), &mut out);
        assert_eq!(gap, 0.0);
        let m = model(&[("a", -1.0), ("aa", -1.0)]);
        let (gap, score) = m.viterbi(b"aa", 0.0, &mut Scratch::default(), &mut out);
        assert_eq!(gap, 1.0);
        assert_eq!(score, -1.0);
    }
}
