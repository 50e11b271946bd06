//! seqio-style packing (`trim_and_pack`, greedy next-fit in order): examples are concatenated
//! into rows of the feature lengths, a new row starting when either feature would overflow.
//! Each row carries 1-based segment ids (0 = padding) and positions that restart at 0 for each
//! example; rows are padded with 0 to the full lengths.

use super::Example;

/// One packed row, padded to the feature lengths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRow {
    pub inputs: Vec<u32>,
    pub inputs_segment_ids: Vec<u32>,
    pub inputs_positions: Vec<u32>,
    pub targets: Vec<u32>,
    pub targets_segment_ids: Vec<u32>,
    pub targets_positions: Vec<u32>,
    /// Examples in the row.
    pub examples: u32,
}

impl PackedRow {
    fn clear(&mut self) {
        self.inputs.clear();
        self.inputs_segment_ids.clear();
        self.inputs_positions.clear();
        self.targets.clear();
        self.targets_segment_ids.clear();
        self.targets_positions.clear();
        self.examples = 0;
    }
}

/// Packs examples, in order, into rows.
pub struct Packer {
    inputs_length: usize,
    targets_length: usize,
    row: PackedRow,
}

impl Packer {
    pub fn new(inputs_length: usize, targets_length: usize) -> Self {
        Self {
            inputs_length,
            targets_length,
            row: PackedRow::default(),
        }
    }

    /// Adds an example (already trimmed to the lengths); a row that is full goes to `emit`.
    pub fn push(&mut self, ex: &Example, emit: &mut impl FnMut(&PackedRow)) {
        let fits = self.row.inputs.len() + ex.inputs.len() <= self.inputs_length
            && self.row.targets.len() + ex.targets.len() <= self.targets_length;
        if !fits && self.row.examples > 0 {
            self.flush(emit);
        }
        let seg = self.row.examples + 1;
        let r = &mut self.row;
        r.inputs.extend_from_slice(&ex.inputs);
        r.inputs_segment_ids
            .extend(std::iter::repeat_n(seg, ex.inputs.len()));
        r.inputs_positions.extend(0..ex.inputs.len() as u32);
        r.targets.extend_from_slice(&ex.targets);
        r.targets_segment_ids
            .extend(std::iter::repeat_n(seg, ex.targets.len()));
        r.targets_positions.extend(0..ex.targets.len() as u32);
        r.examples += 1;
    }

    /// Examples in the row being filled.
    pub fn open_examples(&self) -> u32 {
        self.row.examples
    }

    /// Emits the last, partly filled row.
    pub fn finish(&mut self, emit: &mut impl FnMut(&PackedRow)) {
        if self.row.examples > 0 {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(&PackedRow)) {
        let (li, lt) = (self.inputs_length, self.targets_length);
        let r = &mut self.row;
        for v in [
            &mut r.inputs,
            &mut r.inputs_segment_ids,
            &mut r.inputs_positions,
        ] {
            v.resize(li, 0);
        }
        for v in [
            &mut r.targets,
            &mut r.targets_segment_ids,
            &mut r.targets_positions,
        ] {
            v.resize(lt, 0);
        }
        emit(r);
        r.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(i: usize, t: usize) -> Example {
        Example {
            inputs: (1..=i as u32).collect(),
            targets: (1..=t as u32).map(|x| x + 100).collect(),
        }
    }

    #[test]
    fn next_fit_in_order() {
        let mut p = Packer::new(5, 4);
        let mut rows = Vec::new();
        let mut emit = |r: &PackedRow| rows.push(r.clone());
        for e in [ex(2, 1), ex(2, 2), ex(2, 1), ex(1, 1)] {
            p.push(&e, &mut emit);
        }
        p.finish(&mut emit);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].inputs, vec![1, 2, 1, 2, 0]);
        assert_eq!(rows[0].inputs_segment_ids, vec![1, 1, 2, 2, 0]);
        assert_eq!(rows[0].inputs_positions, vec![0, 1, 0, 1, 0]);
        assert_eq!(rows[0].targets, vec![101, 101, 102, 0]);
        assert_eq!(rows[0].targets_segment_ids, vec![1, 2, 2, 0]);
        assert_eq!(rows[1].inputs, vec![1, 2, 1, 0, 0]);
        assert_eq!(rows[1].examples, 2);
    }

    proptest! {
        #[test]
        fn packing_keeps_every_example_in_order(
            sizes in proptest::collection::vec((1usize..20, 1usize..8), 1..60)
        ) {
            let (li, lt) = (20, 8);
            let mut p = Packer::new(li, lt);
            let mut rows = Vec::new();
            let mut emit = |r: &PackedRow| rows.push(r.clone());
            let exs: Vec<Example> = sizes.iter().map(|&(i, t)| ex(i, t)).collect();
            for e in &exs { p.push(e, &mut emit); }
            p.finish(&mut emit);
            let mut back = Vec::new();
            for r in &rows {
                prop_assert_eq!(r.inputs.len(), li);
                prop_assert_eq!(r.targets.len(), lt);
                for s in 1..=r.examples {
                    let take = |v: &[u32], seg: &[u32]| -> Vec<u32> {
                        v.iter().zip(seg).filter(|(_, &g)| g == s).map(|(&x, _)| x).collect()
                    };
                    let e = Example {
                        inputs: take(&r.inputs, &r.inputs_segment_ids),
                        targets: take(&r.targets, &r.targets_segment_ids),
                    };
                    // Positions restart at 0 for each example.
                    let pos: Vec<u32> = r.inputs_positions.iter().zip(&r.inputs_segment_ids)
                        .filter(|(_, &g)| g == s).map(|(&x, _)| x).collect();
                    prop_assert_eq!(pos, (0..e.inputs.len() as u32).collect::<Vec<_>>());
                    back.push(e);
                }
                // Padding is 0 in every column, and only at the end.
                let used = r.inputs_segment_ids.iter().filter(|&&g| g > 0).count();
                prop_assert!(r.inputs_segment_ids[used..].iter().all(|&g| g == 0));
                prop_assert!(r.inputs[used..].iter().all(|&g| g == 0));
            }
            prop_assert_eq!(back, exs);
        }
    }
}
