//! From documents to pieces, as T5's `span_corruption` pipeline does before masking:
//! `select_random_chunk` (a document longer than 65,536 tokens keeps one random chunk),
//! `reduce_concat_tokens` (groups of 128 consecutive documents concatenated with no
//! separator) and `split_tokens` (pieces of the raw length; the short last piece of a group is
//! kept).
//!
//! Groups are formed within one token shard, so shards are independent units of work; every
//! random draw is keyed by (seed, epoch, shard, document or piece index), so the pieces and
//! examples never depend on threads, output shard boundaries or resumption.

use crate::rng::{Rng, Stream};

pub use crate::examples::Chunking;

/// Where the randomness of one shard's pieces comes from.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub seed: u64,
    pub epoch: u64,
    pub shard: u64,
}

/// Cuts a shard's documents into pieces; call [`Pieces::push`] per document in order and
/// [`Pieces::finish`] at the end. Each piece goes to `emit(piece_index, tokens)`.
pub struct Pieces {
    chunking: Chunking,
    keys: Keys,
    group: Vec<u32>,
    docs_in_group: usize,
    docs: u64,
    pieces: u64,
}

impl Pieces {
    pub fn new(chunking: Chunking, keys: Keys) -> Self {
        Self {
            chunking,
            keys,
            group: Vec::new(),
            docs_in_group: 0,
            docs: 0,
            pieces: 0,
        }
    }

    /// Adds the next document of the shard.
    pub fn push<T: Copy + Into<u32>>(&mut self, doc: &[T], emit: &mut impl FnMut(u64, &[u32])) {
        let chunk = self.chunk(doc.len());
        self.group.extend(doc[chunk].iter().map(|&t| t.into()));
        self.docs += 1;
        self.docs_in_group += 1;
        if self.docs_in_group == self.chunking.group_docs {
            self.flush(emit);
        }
    }

    /// Emits what is left of the last group.
    pub fn finish(&mut self, emit: &mut impl FnMut(u64, &[u32])) {
        self.flush(emit);
    }

    /// Pieces emitted so far.
    pub fn pieces(&self) -> u64 {
        self.pieces
    }

    /// The range of a document of `len` tokens that `select_random_chunk` keeps.
    fn chunk(&self, len: usize) -> std::ops::Range<usize> {
        let max = self.chunking.max_chunk;
        if len <= max {
            return 0..len;
        }
        let n = len.div_ceil(max) as u64;
        let k = self.keys;
        let mut rng = Rng::for_item(k.seed, k.epoch, Stream::Chunk, k.shard, self.docs);
        let start = rng.below(n) as usize * max;
        start..(start + max).min(len)
    }

    fn flush(&mut self, emit: &mut impl FnMut(u64, &[u32])) {
        for piece in self.group.chunks(self.chunking.piece) {
            emit(self.pieces, piece);
            self.pieces += 1;
        }
        self.group.clear();
        self.docs_in_group = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(docs: &[Vec<u32>], c: Chunking) -> Vec<Vec<u32>> {
        let mut p = Pieces::new(
            c,
            Keys {
                seed: 1,
                epoch: 0,
                shard: 0,
            },
        );
        let mut out = Vec::new();
        let mut emit = |i: u64, t: &[u32]| {
            assert_eq!(i as usize, out.len());
            out.push(t.to_vec());
        };
        for d in docs {
            p.push(d, &mut emit);
        }
        p.finish(&mut emit);
        out
    }

    #[test]
    fn groups_concatenate_then_split_keeping_the_tail() {
        let c = Chunking {
            max_chunk: 100,
            group_docs: 2,
            piece: 3,
        };
        let docs = vec![vec![1, 2], vec![3, 4, 5, 6], vec![7], vec![8, 9]];
        assert_eq!(
            run(&docs, c),
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
        );
        let docs = vec![vec![1, 2], vec![3, 4, 5, 6], vec![7]];
        assert_eq!(run(&docs, c), vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    }

    #[test]
    fn long_documents_keep_one_aligned_chunk() {
        let c = Chunking {
            max_chunk: 4,
            group_docs: 1,
            piece: 100,
        };
        let doc: Vec<u32> = (0..10).collect();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut p = Pieces::new(
                c,
                Keys {
                    seed,
                    epoch: 0,
                    shard: 0,
                },
            );
            let mut got = Vec::new();
            p.push(&doc, &mut |_, t: &[u32]| got = t.to_vec());
            seen.insert(got);
        }
        let want: std::collections::BTreeSet<Vec<u32>> =
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
                .into_iter()
                .collect();
        assert_eq!(seen, want);
    }
}
