//! The corrupt stage: token shards -> T5 span-corruption examples (docs/upstream.md, section 3).
//!
//! [`lengths`] holds T5's length arithmetic, [`stream`] turns documents into pieces,
//! [`span`] masks a piece (packing is `crate::examples::pack`), and [`job`] is the offline
//! `conveyor corrupt` command. The loader applies the same [`Corruption`] on the fly.

pub mod job;
pub mod lengths;
pub mod span;
pub mod stream;

pub use crate::examples::{Example, PackedRow, Packer};
pub use job::{check_density, check_spans, corrupt, usable_lengths, CorruptConfig, CorruptSummary};
pub use lengths::{random_spans_helper, Lengths};
pub use span::{Scratch, SpanCorruption};
pub use stream::{Chunking, Keys, Pieces};

use crate::rng::{Rng, Stream};

/// The corrupt stage: turns the `index`-th piece of a shard into an example. Implementations
/// draw their randomness only from `(seed, epoch, shard, index)`.
pub trait Corruption: Send + Sync {
    /// Raw tokens per piece and the feature lengths.
    fn lengths(&self) -> Lengths;
    /// Masks `piece` into `out`.
    fn example(
        &self,
        keys: Keys,
        index: u64,
        piece: &[u32],
        scratch: &mut Scratch,
        out: &mut Example,
    );
}

impl Corruption for SpanCorruption {
    fn lengths(&self) -> Lengths {
        self.lengths
    }

    fn example(
        &self,
        keys: Keys,
        index: u64,
        piece: &[u32],
        scratch: &mut Scratch,
        out: &mut Example,
    ) {
        let mut rng = Rng::for_item(keys.seed, keys.epoch, Stream::Mask, keys.shard, index);
        self.corrupt(piece, &mut rng, scratch, out);
    }
}
