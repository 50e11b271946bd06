//! A byte trie over the vocabulary pieces, for the unigram lattice.
//!
//! It plays the part of SentencePiece's darts trie: walking it from a position yields every
//! piece that starts there, shortest first, with its id.

/// A node: its children as a sorted run of `edges`, and the piece id ending here (or -1).
#[derive(Clone, Copy)]
struct Node {
    first_edge: u32,
    num_edges: u32,
    value: i32,
}

pub struct PieceTrie {
    nodes: Vec<Node>,
    /// (byte, child node) sorted by byte within each node's run.
    edges: Vec<(u8, u32)>,
    /// The root's children, indexed by byte, for a fast first step.
    root: [u32; 256],
}

const NONE: u32 = u32::MAX;

impl PieceTrie {
    /// Builds the trie from (piece bytes, id) pairs.
    pub fn new<'a>(pieces: impl IntoIterator<Item = (&'a [u8], i32)>) -> Self {
        // Build with a simple pointer-based tree, then flatten breadth-first.
        struct Tmp {
            children: std::collections::BTreeMap<u8, usize>,
            value: i32,
        }
        let mut tmp = vec![Tmp {
            children: Default::default(),
            value: -1,
        }];
        for (bytes, id) in pieces {
            let mut n = 0;
            for &b in bytes {
                n = match tmp[n].children.get(&b) {
                    Some(&c) => c,
                    None => {
                        tmp.push(Tmp {
                            children: Default::default(),
                            value: -1,
                        });
                        let c = tmp.len() - 1;
                        tmp[n].children.insert(b, c);
                        c
                    }
                };
            }
            tmp[n].value = id;
        }
        let mut nodes = Vec::with_capacity(tmp.len());
        let mut edges = Vec::new();
        for t in &tmp {
            nodes.push(Node {
                first_edge: edges.len() as u32,
                num_edges: t.children.len() as u32,
                value: t.value,
            });
            edges.extend(t.children.iter().map(|(&b, &c)| (b, c as u32)));
        }
        let mut root = [NONE; 256];
        for &(b, c) in &edges[..nodes[0].num_edges as usize] {
            root[b as usize] = c;
        }
        Self { nodes, edges, root }
    }

    fn child(&self, node: u32, b: u8) -> u32 {
        if node == 0 {
            return self.root[b as usize];
        }
        let n = self.nodes[node as usize];
        let run = &self.edges[n.first_edge as usize..(n.first_edge + n.num_edges) as usize];
        match run.binary_search_by_key(&b, |&(eb, _)| eb) {
            Ok(i) => run[i].1,
            Err(_) => NONE,
        }
    }

    /// Calls `f(length, id)` for every piece that is a prefix of `text`, shortest first.
    #[inline]
    pub fn for_each_prefix(&self, text: &[u8], mut f: impl FnMut(usize, i32)) {
        let mut node = 0u32;
        for (i, &b) in text.iter().enumerate() {
            node = self.child(node, b);
            if node == NONE {
                return;
            }
            let v = self.nodes[node as usize].value;
            if v >= 0 {
                f(i + 1, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_prefixes_in_order() {
        let t = PieceTrie::new([
            (&b"a"[..], 1),
            (&b"ab"[..], 2),
            (&b"abc"[..], 3),
            (&b"b"[..], 4),
        ]);
        let mut got = Vec::new();
        t.for_each_prefix(b"abcd", |l, id| got.push((l, id)));
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
        got.clear();
        t.for_each_prefix(b"c", |l, id| got.push((l, id)));
        assert!(got.is_empty());
    }
}
