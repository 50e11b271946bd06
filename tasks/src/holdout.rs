//! The held-out split of a task shipped without a dev file: exactly a fraction of its rows,
//! drawn by position with a fixed seed, so that `task prepare --holdout`, `task texts` and
//! the study runner split a task's examples alike.

/// A deterministic train/dev split of a task's examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holdout {
    pub fraction: f64,
    pub seed: u64,
    /// Keep the held-out part (dev) instead of the rest (train).
    pub keep_held_out: bool,
}

impl Holdout {
    /// The split every conveyor command draws (seed 0): `fraction` of the rows held out, the
    /// held-out side kept when `keep_held_out`.
    pub fn of(fraction: f64, keep_held_out: bool) -> Self {
        Holdout {
            fraction,
            seed: 0,
            keep_held_out,
        }
    }

    /// How many of `n` rows are held out: `fraction` of them, rounded, and at least one row
    /// on either side of a task of two rows or more (a dev or train side of nothing is of no
    /// use; its prepare would fail for want of examples).
    pub fn held_out_count(&self, n: usize) -> usize {
        let count = (self.fraction * n as f64).round() as usize;
        match n {
            0 | 1 => count.min(n),
            _ => count.clamp(1, n - 1),
        }
    }

    /// Which of `n` rows are held out: exactly [`Holdout::held_out_count`] of them, those
    /// whose seeded draws (one per position) are smallest. The same draws as a coin flip per
    /// row would use, so the split is the seed's, but its size is exact, as a TFDS slice's is.
    pub fn held_out(&self, n: usize) -> Vec<bool> {
        let mut draws: Vec<(u64, usize)> = (0..n)
            .map(|i| {
                let mut r = conveyor_pipeline::rng::Rng::for_item(
                    self.seed,
                    0,
                    conveyor_pipeline::rng::Stream::Shuffle,
                    0x401d,
                    i as u64,
                );
                (r.next_u64(), i)
            })
            .collect();
        draws.sort_unstable();
        let mut held = vec![false; n];
        for &(_, i) in &draws[..self.held_out_count(n)] {
            held[i] = true;
        }
        held
    }

    /// The side of `items` this holdout keeps, drawn by position: `prepare` and
    /// `texts::training_texts` split a task's examples through this one function.
    pub fn keep<T>(&self, items: Vec<T>) -> Vec<T> {
        let held = self.held_out(items.len());
        items
            .into_iter()
            .zip(held)
            .filter(|(_, h)| *h == self.keep_held_out)
            .map(|(e, _)| e)
            .collect()
    }
}
