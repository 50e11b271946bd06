//! The loader on the real C4 sample: the same examples as the offline command, exact resume
//! from any batch, disjoint and complete ranks, shuffling that keeps every item.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use conveyor_pipeline::corrupt::{corrupt, CorruptConfig};
use conveyor_pipeline::ingest::{ingest, IngestConfig};
use conveyor_pipeline::loader::{Batch, Loader, LoaderConfig, LoaderInput};
use conveyor_pipeline::progress::Silent;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("conveyor-loader-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The C4 sample as token shards (8 of them).
fn tokens() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = tmp("tokens");
        let mut cfg = IngestConfig::new(
            vec![shared("c4/c4-train.00000-of-01024.first600.json.gz")
                .display()
                .to_string()],
            shared("spiece/t5-spiece.model"),
            out.clone(),
        );
        cfg.shard_tokens = Some(40_000);
        ingest(cfg, &Silent).unwrap();
        out
    })
}

fn corrupt_cfg(inputs_length: usize) -> CorruptConfig {
    CorruptConfig::new(tokens().to_path_buf(), PathBuf::new(), inputs_length)
}

fn offline(name: &str, seed: u64, epoch: u64, pack: bool) -> PathBuf {
    let mut c = corrupt_cfg(128);
    c.out = tmp(name);
    c.seed = seed;
    c.epoch = epoch;
    c.pack = pack;
    corrupt(&c, &Silent).unwrap();
    c.out
}

fn plain(input: LoaderInput, batch: usize, seed: u64) -> LoaderConfig {
    let mut c = LoaderConfig::new(input, batch);
    c.seed = seed;
    c.shuffle_buffer = 0;
    c.shuffle_shards = false;
    c
}

/// Every example of some batches, as (inputs, targets) without padding.
fn examples(batches: &[Batch]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.rows {
            let i = &b.inputs[r * b.inputs_width..(r + 1) * b.inputs_width];
            let t = &b.targets[r * b.targets_width..(r + 1) * b.targets_width];
            match &b.packing {
                None => out.push((
                    i[..b.input_lengths[r] as usize].to_vec(),
                    t[..b.target_lengths[r] as usize].to_vec(),
                )),
                Some(p) => {
                    let si = &p.inputs_segment_ids[r * b.inputs_width..(r + 1) * b.inputs_width];
                    let st = &p.targets_segment_ids[r * b.targets_width..(r + 1) * b.targets_width];
                    let n = *si.iter().max().unwrap();
                    for s in 1..=n {
                        let pick = |v: &[u32], g: &[u32]| -> Vec<u32> {
                            v.iter()
                                .zip(g)
                                .filter(|(_, &x)| x == s)
                                .map(|(&v, _)| v)
                                .collect()
                        };
                        out.push((pick(i, si), pick(t, st)));
                    }
                }
            }
        }
    }
    out
}

fn collect(cfg: LoaderConfig) -> Vec<Batch> {
    Loader::new(cfg).unwrap().map(|b| b.unwrap()).collect()
}

#[test]
fn on_the_fly_examples_equal_the_offline_command() {
    for epoch in [0u64, 1] {
        let dir = offline(&format!("offline{epoch}"), 3, epoch, false);
        let mut a = plain(LoaderInput::Examples(dir), 7, 3);
        a.epochs = Some(1);
        let want = examples(&collect(a));
        let mut b = plain(LoaderInput::Tokens(corrupt_cfg(128)), 7, 3);
        // Start at `epoch`: the on-the-fly masks of that epoch.
        b.epochs = Some(epoch + 1);
        let batches = collect(b);
        let got: Vec<_> = examples(&batches)
            .into_iter()
            .skip(if epoch == 0 { 0 } else { want.len() })
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "epoch {epoch}: on-the-fly examples differ");
    }
}

#[test]
fn a_resumed_loader_continues_exactly() {
    for (pack, world, rank) in [(false, 1, 0), (true, 1, 0), (false, 2, 1)] {
        let mk = || {
            let mut c = LoaderConfig::new(LoaderInput::Tokens(corrupt_cfg(128)), 5);
            c.seed = 11;
            c.shuffle_buffer = 37;
            c.pack = pack;
            c.world_size = world;
            c.rank = rank;
            c.epochs = Some(2);
            c.prefetch = 2;
            c
        };
        let all = collect(mk());
        assert!(all.len() > 20);
        for stop in [1usize, 7, all.len() / 2, all.len() - 3] {
            let mut first = Loader::new(mk()).unwrap();
            for _ in 0..stop {
                first.next().unwrap().unwrap();
            }
            let state = first.state();
            drop(first);
            // The state survives a round trip through JSON (as in a checkpoint).
            let state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            let rest: Vec<Batch> = Loader::resume(mk(), Some(state))
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            assert_eq!(rest.len(), all.len() - stop, "pack {pack} stop {stop}");
            assert!(rest == all[stop..], "pack {pack} world {world} stop {stop}");
        }
    }
}

#[test]
fn ranks_are_disjoint_and_cover_the_epoch() {
    let one = |world: usize, rank: usize| {
        let mut c = LoaderConfig::new(LoaderInput::Tokens(corrupt_cfg(128)), 4);
        c.seed = 2;
        c.shuffle_buffer = 50;
        c.world_size = world;
        c.rank = rank;
        c.epochs = Some(1);
        examples(&collect(c))
    };
    let mut whole = one(1, 0);
    let mut parts: Vec<_> = (0..3).flat_map(|r| one(3, r)).collect();
    assert_eq!(parts.len(), whole.len());
    whole.sort();
    parts.sort();
    assert!(parts == whole);
}

#[test]
fn shuffling_reorders_but_keeps_every_example() {
    let mk = |shuffle: usize, epochs: u64| {
        let dir = offline("shuffle-src", 0, 0, false);
        let mut c = LoaderConfig::new(LoaderInput::Examples(dir), 8);
        c.shuffle_buffer = shuffle;
        c.shuffle_shards = shuffle > 0;
        c.epochs = Some(epochs);
        examples(&collect(c))
    };
    let ordered = mk(0, 1);
    let shuffled = mk(64, 2);
    let (e0, e1) = shuffled.split_at(ordered.len());
    assert_ne!(e0, &ordered[..]);
    assert_ne!(e0, e1, "every epoch draws a new order");
    let mut a = ordered.clone();
    let mut b = e0.to_vec();
    a.sort();
    b.sort();
    assert!(a == b);
}

#[test]
fn packed_example_shards_load_as_packed_rows() {
    let dir = offline("packed", 0, 0, true);
    let mut c = plain(LoaderInput::Examples(dir), 6, 0);
    c.epochs = Some(1);
    let packed = collect(c);
    assert!(packed[0].packing.is_some());
    assert_eq!((packed[0].inputs_width, packed[0].targets_width), (128, 29));
    let dir = offline("unpacked", 0, 0, false);
    let mut c = plain(LoaderInput::Examples(dir), 6, 0);
    c.epochs = Some(1);
    assert!(examples(&packed) == examples(&collect(c)));
}

#[test]
fn a_state_from_another_configuration_is_refused() {
    let mut c = plain(LoaderInput::Tokens(corrupt_cfg(128)), 4, 0);
    c.epochs = Some(1);
    let mut l = Loader::new(c.clone()).unwrap();
    l.next().unwrap().unwrap();
    let state = l.state();
    drop(l);
    c.seed = 1;
    assert!(Loader::resume(c.clone(), Some(state)).is_err());
    // The same data, but epochs ending otherwise (the position would fall elsewhere):
    // refused by name; with the same ending, and from a state saved before the ending was
    // recorded (0), taken.
    c.seed = 0;
    let mut dropping = c.clone();
    dropping.drop_remainder = true;
    let e = Loader::resume(dropping.clone(), Some(state))
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("another align_steps or drop_remainder"),
        "{e}"
    );
    assert!(Loader::resume(c.clone(), Some(state)).is_ok());
    let old = conveyor_pipeline::loader::LoaderState { ending: 0, ..state };
    assert!(Loader::resume(dropping, Some(old)).is_ok());
}

#[test]
fn a_state_past_the_end_of_the_data_is_refused_and_the_end_itself_resumes() {
    let dir = offline("ends", 0, 0, false);
    for (input, world, rank) in [
        (LoaderInput::Examples(dir.clone()), 1, 0),
        (LoaderInput::Tokens(corrupt_cfg(128)), 2, 1),
    ] {
        let mk = || {
            let mut c = plain(input.clone(), 4, 0);
            c.world_size = world;
            c.rank = rank;
            c.epochs = Some(2);
            c
        };
        let epoch0 = {
            let mut c = mk();
            c.epochs = Some(1);
            examples(&collect(c)).len() as u64
        };
        let fp = Loader::new(mk()).unwrap().state().fingerprint;
        let at = |epoch: u64, position: u64| {
            let s = conveyor_pipeline::loader::LoaderState {
                epoch,
                position,
                fingerprint: fp,
                padding: 0,
                ending: 0,
            };
            Loader::resume(mk(), Some(s)).unwrap().collect::<Vec<_>>()
        };
        // The end of epoch 0 is a real resume point: epoch 1 follows, whole.
        let next: Vec<Batch> = at(0, epoch0).into_iter().map(|b| b.unwrap()).collect();
        let fresh: Vec<Batch> = Loader::at_epoch(mk(), 1)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert!(!next.is_empty() && next == fresh, "world {world}");
        for position in [epoch0 + 1, u64::MAX / 2, u64::MAX] {
            let got = at(0, position);
            assert_eq!(got.len(), 1, "one error, not epoch 1's batches: {position}");
            let e = got[0].as_ref().unwrap_err().to_string();
            assert!(
                e.contains("past the end") && e.contains(&position.to_string()),
                "{e}"
            );
        }
    }
}

#[test]
fn an_epoch_that_gives_a_rank_no_batch_is_an_error_not_a_loop() {
    // More rows per batch than the data holds, short batches dropped: every epoch is empty.
    let dir = offline("few", 0, 0, false);
    let mut c = plain(LoaderInput::Examples(dir), 1_000_000, 0);
    c.drop_remainder = true;
    let mut l = Loader::new(c).unwrap();
    let e = l
        .next()
        .expect("an error, not silence")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no batch") && e.contains("rows"), "{e}");
    assert!(l.next().is_none());
}

#[test]
fn ids_beyond_the_vocabulary_name_their_shard_and_row() {
    let dir = offline("ids", 0, 0, false);
    let mut c = plain(LoaderInput::Examples(dir), 4, 0);
    c.vocab_limit = Some(100);
    let e = Loader::new(c)
        .unwrap()
        .find_map(Result::err)
        .unwrap()
        .to_string();
    assert!(e.contains(".parquet") && e.contains("row 0"), "{e}");
}

/// `batches_per_epoch` is the number of batches an epoch really gives each rank, and a loader
/// started at epoch 1 gives what an uninterrupted one gives after its first epoch.
#[test]
fn batches_per_epoch_and_a_start_at_a_later_epoch_are_exact() {
    let dir = offline("per-epoch", 5, 0, false);
    for (world, batch, drop) in [(1, 7, false), (3, 5, false), (3, 5, true), (2, 64, true)] {
        for rank in 0..world {
            let mut c = LoaderConfig::new(LoaderInput::Examples(dir.clone()), batch);
            c.seed = 1;
            c.shuffle_buffer = 50;
            (c.rank, c.world_size, c.drop_remainder, c.epochs) = (rank, world, drop, Some(1));
            let l = Loader::new(c.clone()).unwrap();
            let known = l.batches_per_epoch();
            let mut got = 0u64;
            for b in l {
                b.unwrap();
                got += 1;
            }
            assert_eq!(
                known,
                Some(got),
                "world {world} rank {rank} batch {batch} drop {drop}"
            );
        }
    }
    let mut c = LoaderConfig::new(LoaderInput::Examples(dir), 9);
    c.epochs = Some(2);
    let both = collect(c.clone());
    // A batch's state says where to continue: the last batch of epoch 0 points at epoch 1.
    let first = 1 + both
        .iter()
        .position(|b| (b.state.epoch, b.state.position) == (1, 0))
        .unwrap();
    let later: Vec<Batch> = Loader::at_epoch(c, 1)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert!(
        examples(&later) == examples(&both[first..]),
        "later epoch differs"
    );
    assert_eq!(later.last().map(|b| b.state), both.last().map(|b| b.state));
    let mut t = LoaderConfig::new(LoaderInput::Tokens(corrupt_cfg(64)), 4);
    t.epochs = Some(1);
    assert_eq!(Loader::new(t).unwrap().batches_per_epoch(), None);
}

/// With `align_steps`, W ranks x A batches of B read step by step what one rank reads with
/// batches of W x A x B, across epoch ends whose last step is short (some ranks then hand out
/// empty batches, and every rank starts the next epoch at the same step); every rank hands
/// out the same number of batches per epoch (`batches_per_epoch`), and a rank resumed from
/// the state after any step continues exactly.
#[test]
fn aligned_ranks_read_what_one_rank_reads_step_by_step() {
    let dir = offline("aligned", 2, 0, false);
    let mut empties = 0;
    for (tokens, world, a, b, drop) in [
        (false, 2, 1, 7, false),
        (false, 3, 2, 5, false),
        (true, 2, 2, 3, false),
        (false, 1, 3, 4, false),
        (false, 2, 3, 4, false),
        (true, 3, 3, 2, false),
        (false, 3, 2, 5, true),
        (true, 2, 2, 3, true),
    ] {
        let cfg = |rank: usize, world: usize, batch: usize, align: Option<usize>| {
            let input = match tokens {
                true => LoaderInput::Tokens(corrupt_cfg(128)),
                false => LoaderInput::Examples(dir.clone()),
            };
            let mut c = LoaderConfig::new(input, batch);
            c.seed = 5;
            c.shuffle_buffer = 64;
            (c.rank, c.world_size, c.epochs, c.align_steps) = (rank, world, Some(2), align);
            c.drop_remainder = drop;
            c
        };
        let what = format!("tokens {tokens} world {world} accumulate {a} batch {b} drop {drop}");
        let one = collect(cfg(0, 1, world * a * b, None));
        let mut whole = cfg(0, 1, world * a * b, None);
        whole.drop_remainder = false;
        let items = examples(&collect(whole)).len() / 2;
        assert_ne!(
            items % (world * a * b),
            0,
            "{what}: no short last step to test"
        );
        let ranks: Vec<Vec<Batch>> = (0..world)
            .map(|r| collect(cfg(r, world, b, Some(a))))
            .collect();
        for r in &ranks {
            assert_eq!(r.len(), one.len() * a, "{what}: batches of a rank");
            empties += r.iter().filter(|b| b.rows == 0).count();
        }
        for (j, batch) in one.iter().enumerate() {
            let mut want = examples(std::slice::from_ref(batch));
            let mut got: Vec<_> = ranks
                .iter()
                .flat_map(|r| examples(&r[j * a..(j + 1) * a]))
                .collect();
            want.sort();
            got.sort();
            assert!(got == want, "{what}: step {j} reads other items");
        }
        if !tokens {
            let known = Loader::new(cfg(world - 1, world, b, Some(a))).unwrap();
            assert_eq!(known.batches_per_epoch(), Some((one.len() * a / 2) as u64));
        }
        // Resumed after any batch around the first epoch's end, inside a step too (a rank
        // owing empty batches there used to skip them and come back out of step).
        let end = one.len() / 2;
        for (r, batches) in ranks.iter().enumerate() {
            for i in (end - 2) * a..(end + 1) * a {
                let state = batches[i].state;
                let rest: Vec<Batch> = Loader::resume(cfg(r, world, b, Some(a)), Some(state))
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect();
                assert!(
                    rest == batches[i + 1..],
                    "{what}: rank {r} resumed after batch {i}"
                );
            }
        }
    }
    assert!(
        empties > 0,
        "no rank ever ran out first: the padding went untested"
    );
}

/// A rank resumed at the very end of an epoch whose batches were all full (its state says
/// (epoch, all its items); with a shuffle window smaller than the ranks, the first item it
/// would take lies past the epoch's end) adds no step of empty batches: it starts the next
/// epoch with the other ranks.
#[test]
fn aligned_ranks_resumed_at_an_epoch_end_stay_together() {
    let dir = offline("aligned-end", 2, 0, false);
    let mut c = LoaderConfig::new(LoaderInput::Examples(dir.clone()), 1);
    (c.epochs, c.shuffle_buffer) = (Some(1), 0);
    let items = examples(&collect(c)).len();
    let (world, batch) = [2usize, 3, 4]
        .into_iter()
        .flat_map(|w| (2..=50).rev().map(move |b| (w, b)))
        .find(|(w, b)| items.is_multiple_of(w * b) && items / (w * b) >= 2)
        .expect("ranks and a batch size that divide the epoch");
    let per_epoch = items / (world * batch);
    for rank in 0..world {
        let cfg = || {
            let mut c = LoaderConfig::new(LoaderInput::Examples(dir.clone()), batch);
            c.shuffle_buffer = 0;
            (c.rank, c.world_size, c.epochs, c.align_steps) = (rank, world, Some(2), Some(1));
            c
        };
        let all = collect(cfg());
        assert_eq!(all.len(), 2 * per_epoch, "rank {rank} of {world}");
        let state = all[per_epoch - 1].state;
        assert_eq!(
            state.epoch, 0,
            "a full last batch's state names its epoch's end"
        );
        let rest: Vec<Batch> = Loader::resume(cfg(), Some(state))
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert!(
            rest == all[per_epoch..],
            "rank {rank} of {world} resumed at the end"
        );
    }
}

/// A shard damaged in place (one byte, size and row count unchanged) is an error naming it,
/// for token shards read on the fly and example shards alike: the loader gave other
/// examples silently, where `corrupt` refused the same folder.
#[test]
fn a_shard_damaged_in_place_is_named_not_read() {
    fn copy_with_a_flipped_byte(from: &Path, name: &str) -> PathBuf {
        let to = tmp(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(to.join("manifest.json")).unwrap()).unwrap();
        let shard = to.join(m["shards"][0]["file"].as_str().unwrap());
        let mut bytes = std::fs::read(&shard).unwrap();
        let middle = bytes.len() / 3;
        bytes[middle] ^= 0x10;
        std::fs::write(&shard, bytes).unwrap();
        to
    }
    let tokens = copy_with_a_flipped_byte(tokens(), "flipped-tokens");
    let mut c = corrupt_cfg(128);
    c.tokens = tokens;
    let examples = copy_with_a_flipped_byte(&offline("flipped-src", 0, 0, false), "flipped-ex");
    for input in [LoaderInput::Tokens(c), LoaderInput::Examples(examples)] {
        let mut cfg = plain(input, 4, 0);
        cfg.epochs = Some(1);
        let e = Loader::new(cfg)
            .unwrap()
            .find_map(Result::err)
            .expect("an error")
            .to_string();
        assert!(e.contains("-00000-of-") && e.contains("sha256"), "{e}");
    }
}
