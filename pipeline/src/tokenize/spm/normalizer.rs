//! SentencePiece's text normaliser, reimplemented to give byte-identical output.
//!
//! The model's `precompiled_charsmap` is a darts-clone double-array trie mapping input byte
//! sequences to replacement strings; normalisation takes the longest match at each position
//! (user-defined symbols first pass through untouched), then collapses and trims whitespace,
//! adds the dummy prefix and escapes spaces as `▁`, exactly as `normalizer.cc` does.

use super::proto::NormalizerSpec;
use super::trie::{Piece, PieceTrie};

/// The escaped whitespace symbol U+2581.
pub const SPACE_SYMBOL: &str = "\u{2581}";

/// The most bytes one charsmap rule may write (nmt_nfkc's longest is 33, U+FDFA).
const MAX_REPLACEMENT: usize = 256;

/// A darts-clone double array, read from the charsmap blob.
struct DoubleArray {
    units: Vec<u32>,
}

impl DoubleArray {
    fn has_leaf(unit: u32) -> bool {
        (unit >> 8) & 1 == 1
    }
    fn value(unit: u32) -> u32 {
        unit & ((1 << 31) - 1)
    }
    fn label(unit: u32) -> u32 {
        unit & ((1 << 31) | 0xff)
    }
    fn offset(unit: u32) -> usize {
        ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
    }

    /// The longest key that is a prefix of `key`: (length, value).
    fn longest_prefix(&self, key: &[u8]) -> Option<(usize, u32)> {
        let mut best = None;
        let mut pos = Self::offset(*self.units.first()?);
        for (i, &b) in key.iter().enumerate() {
            pos ^= b as usize;
            let unit = *self.units.get(pos)?;
            if Self::label(unit) != b as u32 {
                return best;
            }
            pos ^= Self::offset(unit);
            if Self::has_leaf(unit) {
                let leaf = *self.units.get(pos)?;
                best = Some((i + 1, Self::value(leaf)));
            }
        }
        best
    }

    /// For an ASCII byte `b`: whether it normalises to itself whenever the next byte is
    /// ASCII too (or the input ends), i.e. no rule continues from `b` with an ASCII byte and
    /// `b` alone either has no rule or is replaced by itself.
    fn ascii_maps_to_itself(&self, b: u8, replacements: &[u8]) -> bool {
        let Some(&root) = self.units.first() else {
            return true;
        };
        let at = Self::offset(root) ^ b as usize;
        let Some(&unit) = self.units.get(at) else {
            return true;
        };
        if Self::label(unit) != b as u32 {
            return true;
        }
        let pos = at ^ Self::offset(unit);
        if Self::has_leaf(unit) {
            let Some(&leaf) = self.units.get(pos) else {
                return false;
            };
            let start = (Self::value(leaf) as usize).min(replacements.len());
            let rest = &replacements[start..];
            let end = memchr::memchr(0, rest).unwrap_or(rest.len());
            if rest[..end] != [b] {
                return false;
            }
        }
        (0u8..0x80).all(|c| {
            self.units
                .get(pos ^ c as usize)
                .is_none_or(|&u| Self::label(u) != c as u32)
        })
    }

    /// Whether any key starts with byte `b`.
    fn has_transition(&self, b: u8) -> bool {
        let Some(&root) = self.units.first() else {
            return false;
        };
        let pos = Self::offset(root) ^ b as usize;
        self.units
            .get(pos)
            .is_some_and(|&u| Self::label(u) == b as u32)
    }
}

/// A compiled normaliser.
pub struct Normalizer {
    trie: Option<DoubleArray>,
    /// Replacement strings, NUL-separated, indexed by trie values.
    replacements: Vec<u8>,
    /// Bytes that start no charsmap rule: an ASCII one maps to itself.
    passthrough: [bool; 256],
    /// ASCII bytes other than space that start no user symbol and normalise to themselves
    /// when followed by ASCII: runs of them are copied as they are.
    copy: [bool; 256],
    /// User-defined symbols, which are matched before the charsmap and never changed (a
    /// trie: a model may hold 10^5 of them, and a scan of all at every position was ~1000x
    /// slower than SentencePiece).
    user_symbols: Option<PieceTrie>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

/// Why a charsmap could not be read.
#[derive(Debug)]
pub struct CharsmapError(pub String);

impl Normalizer {
    pub fn new(
        spec: &NormalizerSpec,
        user_symbols: Vec<Vec<u8>>,
        treat_whitespace_as_suffix: bool,
    ) -> Result<Self, CharsmapError> {
        let (trie, replacements) = if spec.precompiled_charsmap.is_empty() {
            (None, Vec::new())
        } else {
            let blob = &spec.precompiled_charsmap;
            if blob.len() < 4 {
                return Err(CharsmapError("precompiled charsmap is too short".into()));
            }
            let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
            if !trie_size.is_multiple_of(4) || 4 + trie_size > blob.len() {
                return Err(CharsmapError(
                    "precompiled charsmap has a bad trie size".into(),
                ));
            }
            let units = blob[4..4 + trie_size]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let replacements = blob[4 + trie_size..].to_vec();
            // A rule consumes at least one byte; bounding what it writes bounds the
            // normalised text by the input (real charsmaps write at most a few dozen bytes;
            // a hand-made one mapping a letter to a megabyte aborted on a 6 KB document).
            if let Some(long) = replacements
                .split(|&b| b == 0)
                .find(|r| r.len() > MAX_REPLACEMENT)
            {
                return Err(CharsmapError(format!(
                    "precompiled charsmap replaces a character with {} bytes, more than the {MAX_REPLACEMENT} any real normaliser writes",
                    long.len()
                )));
            }
            (Some(DoubleArray { units }), replacements)
        };
        let mut passthrough = [true; 256];
        if let Some(t) = &trie {
            for (b, p) in passthrough.iter_mut().enumerate() {
                *p = !t.has_transition(b as u8);
            }
        }
        let mut user_first = [false; 256];
        for s in &user_symbols {
            if let Some(&b) = s.first() {
                passthrough[b as usize] = false;
                user_first[b as usize] = true;
            }
        }
        let mut copy = [false; 256];
        for (b, c) in copy.iter_mut().enumerate().take(0x80) {
            let user = user_first[b];
            let rules_keep_it = trie
                .as_ref()
                .is_none_or(|t| t.ascii_maps_to_itself(b as u8, &replacements));
            *c = b != b' ' as usize && !user && rules_keep_it;
        }
        Ok(Self {
            trie,
            replacements,
            passthrough,
            copy,
            user_symbols: (!user_symbols.is_empty()).then(|| {
                PieceTrie::new(user_symbols.iter().enumerate().map(|(i, s)| {
                    let piece = Piece {
                        id: i as i32,
                        score: 0.0,
                        user: true,
                    };
                    (s.as_slice(), piece)
                }))
            }),
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
        })
    }

    /// The normalised form of the longest rule matching the start of `input`, and how many
    /// input bytes it consumes. `input` is valid UTF-8 and not empty.
    fn prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        let b = input[0];
        if b < 0x80 && self.passthrough[b as usize] {
            return (&input[..1], 1);
        }
        if let Some(user) = &self.user_symbols {
            let mut longest = 0;
            user.for_each_prefix(input, |len, _| longest = len);
            if longest > 0 {
                return (&input[..longest], longest);
            }
        }
        if let Some(trie) = &self.trie {
            if let Some((len, value)) = trie.longest_prefix(input) {
                let start = (value as usize).min(self.replacements.len());
                let rest = &self.replacements[start..];
                let end = memchr::memchr(0, rest).unwrap_or(rest.len());
                return (&rest[..end], len);
            }
        }
        let n = utf8_len(b).min(input.len());
        (&input[..n], n)
    }

    /// How many leading bytes of `input` normalise to themselves one by one: copyable ASCII
    /// bytes each followed by ASCII (a rule might join a letter with a following combining
    /// mark, so a byte before non-ASCII takes the general path).
    #[inline]
    fn copy_run(&self, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() && self.copy[input[i] as usize] {
            if input.get(i + 1).is_some_and(|&n| n >= 0x80) {
                break;
            }
            i += 1;
        }
        i
    }

    fn push_space(&self, out: &mut Vec<u8>) {
        if self.escape_whitespaces {
            out.extend_from_slice(SPACE_SYMBOL.as_bytes());
        } else {
            out.push(b' ');
        }
    }

    /// Normalises `text` into `out` (cleared first).
    pub fn normalize(&self, text: &str, out: &mut Vec<u8>) {
        out.clear();
        let mut input = text.as_bytes();
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (norm, consumed) = self.prefix(input);
                if norm != b" " {
                    break;
                }
                input = &input[consumed..];
            }
        }
        if input.is_empty() {
            return;
        }
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(out);
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            // The common case: a run of characters that normalise to themselves.
            let run = self.copy_run(input);
            if run > 0 {
                out.extend_from_slice(&input[..run]);
                input = &input[run..];
                prev_space = false;
                continue;
            }
            let (mut norm, consumed) = self.prefix(input);
            if prev_space {
                while let [b' ', rest @ ..] = norm {
                    norm = rest;
                }
            }
            if !norm.is_empty() {
                for &c in norm {
                    if c == b' ' && self.escape_whitespaces {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(c);
                    }
                }
                prev_space = norm.last() == Some(&b' ');
            }
            input = &input[consumed..];
            if !self.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            let space: &[u8] = if self.escape_whitespaces {
                SPACE_SYMBOL.as_bytes()
            } else {
                b" "
            };
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(out);
        }
    }
}

/// Length of the UTF-8 sequence that starts with byte `b` (SentencePiece's `OneCharLen`).
pub fn utf8_len(b: u8) -> usize {
    const LEN: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LEN[(b >> 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Normalizer {
        Normalizer::new(&NormalizerSpec::default(), Vec::new(), false).unwrap()
    }

    fn norm(n: &Normalizer, s: &str) -> String {
        let mut out = Vec::new();
        n.normalize(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn collapses_trims_and_escapes_whitespace() {
        let n = plain();
        assert_eq!(norm(&n, "  hello   world  "), "▁hello▁world");
        assert_eq!(norm(&n, "a"), "▁a");
        assert_eq!(norm(&n, "   "), "");
        assert_eq!(norm(&n, ""), "");
    }

    #[test]
    fn user_symbols_pass_through() {
        let n = Normalizer::new(&NormalizerSpec::default(), vec![b"<x>".to_vec()], false).unwrap();
        assert_eq!(norm(&n, "a<x>b"), "▁a<x>b");
    }

    /// The longest user symbol at each position wins, as a scan of all of them finds it,
    /// with thousands of symbols sharing prefixes.
    #[test]
    fn the_longest_user_symbol_wins_among_many() {
        let mut symbols: Vec<Vec<u8>> = (0..5000)
            .map(|i| format!("<{}>", i % 700).repeat(1 + i % 3).into_bytes())
            .collect();
        symbols.extend([b"<".to_vec(), b"<1".to_vec(), "é<".as_bytes().to_vec()]);
        let n = Normalizer::new(&NormalizerSpec::default(), symbols.clone(), false).unwrap();
        let mut rng = crate::rng::Rng::from_state(7);
        let alphabet = ["<", ">", "1", "2", "3", "a", " ", "é"];
        for _ in 0..300 {
            let text: String = (0..40)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let mut at = text.as_bytes();
            while !at.is_empty() {
                let naive = symbols
                    .iter()
                    .filter(|s| at.starts_with(s))
                    .map(|s| s.len())
                    .max();
                let (norm, used) = n.prefix(at);
                match naive {
                    Some(len) => assert_eq!((norm, used), (&at[..len], len), "{text:?}"),
                    // No symbol here: one character, as it is (no charsmap).
                    None => {
                        let one = utf8_len(at[0]);
                        assert_eq!((norm, used), (&at[..one], one), "{text:?}");
                    }
                }
                at = &at[used..];
            }
        }
    }

    #[test]
    fn a_charsmap_writing_more_than_any_real_one_is_refused() {
        let mut blob = 4u32.to_le_bytes().to_vec();
        blob.extend([0; 4]);
        blob.extend(b"ok\0");
        blob.extend(vec![b'x'; MAX_REPLACEMENT + 1]);
        let spec = NormalizerSpec {
            precompiled_charsmap: blob,
            ..NormalizerSpec::default()
        };
        let Err(e) = Normalizer::new(&spec, Vec::new(), false) else {
            panic!("a {}-byte replacement was accepted", MAX_REPLACEMENT + 1)
        };
        assert!(e.0.contains("257 bytes"), "{}", e.0);
    }

    #[test]
    fn suffix_mode_puts_the_space_at_the_end() {
        let n = Normalizer::new(&NormalizerSpec::default(), Vec::new(), true).unwrap();
        assert_eq!(norm(&n, "a b"), "a▁b▁");
    }

    #[test]
    fn keeps_whitespace_when_asked() {
        let spec = NormalizerSpec {
            remove_extra_whitespaces: false,
            add_dummy_prefix: false,
            ..NormalizerSpec::default()
        };
        let n = Normalizer::new(&spec, Vec::new(), false).unwrap();
        assert_eq!(norm(&n, " a  b "), "▁a▁▁b▁");
    }
}
