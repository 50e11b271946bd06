//! The per-thread word cache of the native encoder: each distinct word's best path and the
//! smallest decision gap met finding it. Words and paths live in two arenas indexed by one
//! hash table, so a new word costs no allocation of its own and emptying the cache frees
//! nothing piece by piece.

use hashbrown::HashTable;

use super::unigram::Tok;

/// Words kept before the cache is emptied, and arena bytes (bounds memory on huge corpora
/// and on documents with very long words).
const MAX_WORDS: usize = 1 << 20;
const MAX_BYTES: usize = 64 << 20;

/// Offsets into the arenas (which MAX_BYTES keeps far below 4 GiB): small slots keep more
/// of the table in cache.
#[derive(Clone, Copy)]
struct Slot {
    word: u32,
    word_len: u32,
    toks: u32,
    toks_len: u32,
    min_gap: f64,
}

#[derive(Default)]
pub struct WordCache {
    table: HashTable<Slot>,
    words: Vec<u8>,
    toks: Vec<Tok>,
    hasher: ahash::RandomState,
}

impl WordCache {
    /// Empties the cache (keeping its memory for reuse).
    pub fn clear(&mut self) {
        self.table.clear();
        self.words.clear();
        self.toks.clear();
    }

    /// The best path of `word` and its smallest decision gap: cached, or computed by
    /// `viterbi` (which appends the path to the vector it is given and returns the gap).
    pub fn path(
        &mut self,
        word: &[u8],
        viterbi: impl FnOnce(&mut Vec<Tok>) -> f64,
    ) -> (&[Tok], f64) {
        let hash = self.hasher.hash_one(word);
        let words = &self.words;
        let same = |s: &Slot| {
            let at = s.word as usize;
            s.word_len as usize == word.len() && &words[at..at + word.len()] == word
        };
        let slot = match self.table.find(hash, same) {
            Some(s) => *s,
            None => {
                let size = self.words.len() + self.toks.len() * std::mem::size_of::<Tok>();
                if self.table.len() >= MAX_WORDS || size >= MAX_BYTES {
                    self.clear();
                }
                let toks = self.toks.len();
                let min_gap = viterbi(&mut self.toks);
                let s = Slot {
                    word: self.words.len() as u32,
                    word_len: word.len() as u32,
                    toks: toks as u32,
                    toks_len: (self.toks.len() - toks) as u32,
                    min_gap,
                };
                self.words.extend_from_slice(word);
                let (words, hasher) = (&self.words, &self.hasher);
                self.table.insert_unique(hash, s, |s| {
                    let at = s.word as usize;
                    hasher.hash_one(&words[at..at + s.word_len as usize])
                });
                s
            }
        };
        let at = slot.toks as usize;
        (&self.toks[at..at + slot.toks_len as usize], slot.min_gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: u32) -> Tok {
        Tok::new(id, 1, -1.0)
    }

    #[test]
    fn a_word_is_computed_once_and_kept_apart_from_others() {
        let mut c = WordCache::default();
        let mut calls = 0;
        for (word, id) in [(&b"ab"[..], 1), (b"cd", 2), (b"ab", 9), (b"abc", 3)] {
            let (toks, gap) = c.path(word, |out| {
                calls += 1;
                out.extend([tok(id), tok(id + 10)]);
                id as f64
            });
            let want = if word == b"ab" { 1 } else { id };
            assert_eq!(
                toks.iter().map(|t| t.id).collect::<Vec<_>>(),
                [want, want + 10]
            );
            assert_eq!(gap, want as f64);
        }
        assert_eq!(calls, 3);
        c.clear();
        let (toks, _) = c.path(b"ab", |out| {
            out.push(tok(7));
            0.0
        });
        assert_eq!(toks[0].id, 7);
    }
}
