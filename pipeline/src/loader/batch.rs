//! Turns a rank's items into batches: padded rows with lengths, or packed rows with segment
//! ids and positions (items that are already packed rows, or examples packed here).

use crate::examples::{Example, PackedRow, Packer};

/// One training batch, row-major, padded with 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    pub inputs_width: usize,
    pub targets_width: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// Tokens used per row (padding excluded).
    pub input_lengths: Vec<u32>,
    pub target_lengths: Vec<u32>,
    /// Packed rows: segment ids (1-based, 0 = padding) and positions per feature.
    pub packing: Option<Packing>,
    /// Examples in the batch (more than rows when packed).
    pub examples: usize,
    /// Where the loader stands after this batch: restore it to continue right after.
    pub state: super::LoaderState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packing {
    pub inputs_segment_ids: Vec<u32>,
    pub inputs_positions: Vec<u32>,
    pub targets_segment_ids: Vec<u32>,
    pub targets_positions: Vec<u32>,
}

/// What the loader hands to the batcher.
pub enum Item {
    Example(Example),
    Packed(PackedRow),
}

impl Item {
    /// The row's inputs and targets ids.
    pub fn ids(&self) -> (&[u32], &[u32]) {
        match self {
            Item::Example(e) => (&e.inputs, &e.targets),
            Item::Packed(r) => (&r.inputs, &r.targets),
        }
    }
}

/// Collects rows into batches.
pub struct Batcher {
    batch_size: usize,
    /// Feature lengths: the widths of padded rows.
    inputs_length: usize,
    targets_length: usize,
    pad_to_longest: bool,
    packer: Option<Packer>,
    rows: Vec<PackedRow>,
    plain: Vec<Example>,
}

impl Batch {
    /// A batch of no rows: the loader's padding that keeps ranks' epochs in step
    /// (`LoaderConfig::align_steps`). A trainer skips it; it counts no tokens. `packed`: it
    /// carries the (empty) packing features, as the other batches of a packed source do.
    pub fn empty(state: super::LoaderState, packed: bool) -> Batch {
        Batch {
            rows: 0,
            inputs_width: 0,
            targets_width: 0,
            inputs: Vec::new(),
            targets: Vec::new(),
            input_lengths: Vec::new(),
            target_lengths: Vec::new(),
            packing: packed.then(Packing::default),
            examples: 0,
            state,
        }
    }
}

impl Batcher {
    pub fn new(
        batch_size: usize,
        inputs_length: usize,
        targets_length: usize,
        pack: bool,
        pad_to_longest: bool,
    ) -> Self {
        Self {
            batch_size,
            inputs_length,
            targets_length,
            pad_to_longest,
            packer: pack.then(|| Packer::new(inputs_length, targets_length)),
            rows: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Adds an item (an example, or a row that was packed when written).
    pub fn push(&mut self, item: Item) {
        match item {
            Item::Packed(r) => self.rows.push(r),
            Item::Example(e) => match self.packer.as_mut() {
                Some(p) => {
                    let rows = &mut self.rows;
                    p.push(&e, &mut |r| rows.push(r.clone()));
                }
                None => self.plain.push(e),
            },
        }
    }

    /// Rows ready to go into batches.
    pub fn ready(&self) -> usize {
        self.rows.len() + self.plain.len()
    }

    /// Items pushed but not yet handed out in a batch (an item is an example, or a row that
    /// was packed when written).
    pub fn waiting_items(&self) -> usize {
        match &self.packer {
            Some(p) => {
                self.rows.iter().map(|r| r.examples as usize).sum::<usize>()
                    + p.open_examples() as usize
            }
            None => self.rows.len() + self.plain.len(),
        }
    }

    /// Flushes the packer's open row (end of epoch).
    pub fn flush(&mut self) {
        if let Some(p) = self.packer.as_mut() {
            let rows = &mut self.rows;
            p.finish(&mut |r| rows.push(r.clone()));
        }
    }

    /// Takes up to `batch_size` ready rows as a batch, stamped with `state`.
    pub fn take(&mut self, state: super::LoaderState) -> Option<Batch> {
        let n = self.ready().min(self.batch_size);
        if n == 0 {
            return None;
        }
        Some(if !self.rows.is_empty() {
            let rows: Vec<PackedRow> = self.rows.drain(..n).collect();
            self.packed_batch(rows, state)
        } else {
            let exs: Vec<Example> = self.plain.drain(..n).collect();
            self.plain_batch(exs, state)
        })
    }

    fn plain_batch(&self, exs: Vec<Example>, state: super::LoaderState) -> Batch {
        let (wi, wt) = if self.pad_to_longest {
            (
                exs.iter().map(|e| e.inputs.len()).max().unwrap_or(0),
                exs.iter().map(|e| e.targets.len()).max().unwrap_or(0),
            )
        } else {
            (self.inputs_length, self.targets_length)
        };
        let mut b = Batch {
            rows: exs.len(),
            inputs_width: wi,
            targets_width: wt,
            inputs: Vec::with_capacity(exs.len() * wi),
            targets: Vec::with_capacity(exs.len() * wt),
            input_lengths: Vec::with_capacity(exs.len()),
            target_lengths: Vec::with_capacity(exs.len()),
            packing: None,
            examples: exs.len(),
            state,
        };
        for e in &exs {
            pad_into(&mut b.inputs, &e.inputs, wi);
            pad_into(&mut b.targets, &e.targets, wt);
            b.input_lengths.push(e.inputs.len().min(wi) as u32);
            b.target_lengths.push(e.targets.len().min(wt) as u32);
        }
        b
    }

    fn packed_batch(&self, rows: Vec<PackedRow>, state: super::LoaderState) -> Batch {
        let (wi, wt) = (self.inputs_length, self.targets_length);
        let n = rows.len();
        let mut p = Packing {
            inputs_segment_ids: Vec::with_capacity(n * wi),
            inputs_positions: Vec::with_capacity(n * wi),
            targets_segment_ids: Vec::with_capacity(n * wt),
            targets_positions: Vec::with_capacity(n * wt),
        };
        let mut b = Batch {
            rows: n,
            inputs_width: wi,
            targets_width: wt,
            inputs: Vec::with_capacity(n * wi),
            targets: Vec::with_capacity(n * wt),
            input_lengths: Vec::with_capacity(n),
            target_lengths: Vec::with_capacity(n),
            packing: None,
            examples: rows.iter().map(|r| r.examples as usize).sum(),
            state,
        };
        for r in &rows {
            pad_into(&mut b.inputs, &r.inputs, wi);
            pad_into(&mut b.targets, &r.targets, wt);
            pad_into(&mut p.inputs_segment_ids, &r.inputs_segment_ids, wi);
            pad_into(&mut p.inputs_positions, &r.inputs_positions, wi);
            pad_into(&mut p.targets_segment_ids, &r.targets_segment_ids, wt);
            pad_into(&mut p.targets_positions, &r.targets_positions, wt);
            b.input_lengths
                .push(r.inputs_segment_ids.iter().filter(|&&s| s > 0).count() as u32);
            b.target_lengths
                .push(r.targets_segment_ids.iter().filter(|&&s| s > 0).count() as u32);
        }
        b.packing = Some(p);
        b
    }
}

fn pad_into(out: &mut Vec<u32>, v: &[u32], width: usize) {
    let n = v.len().min(width);
    out.extend_from_slice(&v[..n]);
    out.extend(std::iter::repeat_n(0, width - n));
}
