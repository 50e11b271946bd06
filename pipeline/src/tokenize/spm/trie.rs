//! A byte trie over the vocabulary pieces, for the unigram lattice.
//!
//! It plays the part of SentencePiece's darts trie: walking it from a position yields every
//! piece that starts there, shortest first, with its id and what the lattice needs of it.
//! The walk is bound by memory latency, so the nodes live in one byte arena in depth-first
//! order, each holding its piece and its edges (sorted key bytes, then child offsets): a
//! step reads one node, usually one or two cache lines, and the first child of a node
//! follows it directly.

/// What the lattice needs of a piece.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Piece {
    pub id: i32,
    pub score: f32,
    /// A user-defined symbol (scored by its length, not `score`).
    pub user: bool,
}

const NO_PIECE: Piece = Piece {
    id: -1,
    score: 0.0,
    user: false,
};

/// A node's header: piece id (i32), score (f32), user flag (u16), edge count (u16); then the
/// edges' key bytes, padding to 4, and the children's offsets (u32 each).
const HEADER: usize = 12;

pub struct PieceTrie {
    arena: Vec<u8>,
    /// The offsets of the root's children, indexed by byte (the first step of every walk).
    root: [u32; 256],
}

const NONE: u32 = u32::MAX;

#[inline]
fn read_u32(a: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(a[at..at + 4].try_into().expect("four bytes"))
}

impl PieceTrie {
    /// Builds the trie from (piece bytes, piece) pairs.
    pub fn new<'a>(pieces: impl IntoIterator<Item = (&'a [u8], Piece)>) -> Self {
        struct Tmp {
            children: std::collections::BTreeMap<u8, usize>,
            value: Piece,
        }
        let mut tmp = vec![Tmp {
            children: Default::default(),
            value: NO_PIECE,
        }];
        for (bytes, piece) in pieces {
            let mut n = 0;
            for &b in bytes {
                n = match tmp[n].children.get(&b) {
                    Some(&c) => c,
                    None => {
                        tmp.push(Tmp {
                            children: Default::default(),
                            value: NO_PIECE,
                        });
                        let c = tmp.len() - 1;
                        tmp[n].children.insert(b, c);
                        c
                    }
                };
            }
            tmp[n].value = piece;
        }
        // Depth first, children in byte order; each placed node patches its parent's slot.
        let mut arena = Vec::new();
        let mut root = [NONE; 256];
        let mut stack: Vec<(usize, Option<usize>)> = Vec::new();
        for &c in tmp[0].children.values().rev() {
            stack.push((c, None));
        }
        let mut placed = vec![NONE; tmp.len()];
        while let Some((t, slot)) = stack.pop() {
            let at = arena.len();
            placed[t] = at as u32;
            if let Some(s) = slot {
                arena[s..s + 4].copy_from_slice(&(at as u32).to_le_bytes());
            }
            let node = &tmp[t];
            let n = node.children.len();
            arena.extend_from_slice(&node.value.id.to_le_bytes());
            arena.extend_from_slice(&node.value.score.to_le_bytes());
            arena.extend_from_slice(&u16::from(node.value.user).to_le_bytes());
            arena.extend_from_slice(&(n as u16).to_le_bytes());
            arena.extend(node.children.keys());
            arena.resize(arena.len().next_multiple_of(4), 0);
            let slots = arena.len();
            arena.resize(slots + 4 * n, 0xff);
            for (i, &c) in node.children.values().enumerate().rev() {
                stack.push((c, Some(slots + 4 * i)));
            }
        }
        for (&b, &c) in &tmp[0].children {
            root[b as usize] = placed[c];
        }
        Self { arena, root }
    }

    /// Calls `f(length, piece)` for every piece that is a prefix of `text`, shortest first.
    #[inline]
    pub fn for_each_prefix(&self, text: &[u8], mut f: impl FnMut(usize, &Piece)) {
        let a = &self.arena[..];
        let Some(&first) = text.first() else { return };
        let mut at = self.root[first as usize];
        let mut i = 0;
        while at != NONE {
            let at_ = at as usize;
            let id = read_u32(a, at_) as i32;
            if id >= 0 {
                let piece = Piece {
                    id,
                    score: f32::from_bits(read_u32(a, at_ + 4)),
                    user: a[at_ + 8] != 0,
                };
                f(i + 1, &piece);
            }
            i += 1;
            let Some(&b) = text.get(i) else { return };
            let n = u16::from_le_bytes([a[at_ + 10], a[at_ + 11]]) as usize;
            let keys = &a[at_ + HEADER..at_ + HEADER + n];
            at = match keys.binary_search(&b) {
                Ok(k) => read_u32(a, (at_ + HEADER + n).next_multiple_of(4) + 4 * k),
                Err(_) => NONE,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_prefixes_in_order() {
        let piece = |id| Piece {
            id,
            score: -(id as f32),
            user: id == 2,
        };
        let t = PieceTrie::new([
            (&b"a"[..], piece(1)),
            (&b"ab"[..], piece(2)),
            (&b"abc"[..], piece(3)),
            (&b"b"[..], piece(4)),
            (&b"ax"[..], piece(5)),
            (&b"aa"[..], piece(6)),
        ]);
        let mut got = Vec::new();
        t.for_each_prefix(b"abcd", |l, p| got.push((l, *p)));
        assert_eq!(got, vec![(1, piece(1)), (2, piece(2)), (3, piece(3))]);
        for (text, want) in [(&b"ax"[..], 5), (b"aab", 6), (b"bc", 4)] {
            got.clear();
            t.for_each_prefix(text, |l, p| got.push((l, *p)));
            assert_eq!(got.last().map(|g| g.1.id), Some(want), "{text:?}");
        }
        got.clear();
        t.for_each_prefix(b"c", |l, p| got.push((l, *p)));
        assert!(got.is_empty());
        t.for_each_prefix(b"", |l, p| got.push((l, *p)));
        assert!(got.is_empty());
    }
}
