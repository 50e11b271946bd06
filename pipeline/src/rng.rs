//! Stateless, counter-based randomness: every random decision is drawn from a generator
//! seeded by *what* it is for (seed, epoch, stream, item), never by the order in which work
//! happens, so results do not depend on the thread count, on shard boundaries or on where a
//! run was resumed. The generator is SplitMix64 (a 64-bit counter through a strong mixer),
//! written here so that its output is fixed by this crate, not by a dependency's version.

/// What a generator is for; keeps the draws of different decisions independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Which chunk of an over-long document is kept.
    Chunk = 1,
    /// The noise mask of an example.
    Mask = 2,
    /// Shard order and shuffle buffer of a loader epoch.
    Shuffle = 3,
}

/// SplitMix64's finaliser: a bijective, well-avalanched mix of 64 bits.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A small generator for one item's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The generator of `item` (e.g. an example index) within `group` (e.g. a shard) for
    /// `stream` in `epoch` under `seed`.
    pub fn for_item(seed: u64, epoch: u64, stream: Stream, group: u64, item: u64) -> Self {
        let mut h = mix64(seed ^ 0x5eed_0000_0000_0000);
        for v in [epoch, stream as u64, group, item] {
            h = mix64(h ^ v.wrapping_mul(GAMMA));
        }
        Self { state: h }
    }

    /// The generator's whole state (for checkpoints).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform in `0..n` without bias (Lemire's multiply-and-reject). `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_get_independent_repeatable_streams() {
        let a = Rng::for_item(1, 0, Stream::Mask, 0, 5).next_u64();
        assert_eq!(a, Rng::for_item(1, 0, Stream::Mask, 0, 5).next_u64());
        assert_ne!(a, Rng::for_item(1, 0, Stream::Mask, 0, 6).next_u64());
        assert_ne!(a, Rng::for_item(1, 1, Stream::Mask, 0, 5).next_u64());
        assert_ne!(a, Rng::for_item(1, 0, Stream::Chunk, 0, 5).next_u64());
        assert_ne!(a, Rng::for_item(2, 0, Stream::Mask, 0, 5).next_u64());
        assert_ne!(a, Rng::for_item(1, 0, Stream::Mask, 1, 5).next_u64());
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut r = Rng::for_item(9, 0, Stream::Mask, 0, 0);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
