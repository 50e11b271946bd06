"""conveyor.Loader: the examples `conveyor corrupt` writes, every example once per epoch,
exact resume from its state_dict at several points, disjoint and complete ranks, refused
states, len(), packing, and use as a torch DataLoader's dataset."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import conveyor


@pytest.fixture(scope="module")
def examples(conveyor_bin, c4_tokens, tmp_path_factory):
    """The C4 sample span-corrupted offline (seed 3, epoch 0, inputs 128)."""
    out = tmp_path_factory.mktemp("ex") / "examples"
    subprocess.run([conveyor_bin, "corrupt", str(c4_tokens), "--out", str(out), "--inputs-length", "128",
                    "--seed", "3", "-q"], check=True)
    return out


def offline(folder):
    m = json.loads((folder / "manifest.json").read_text())
    rows = []
    for s in m["shards"]:
        t = pq.read_table(folder / s["file"])
        rows += list(zip(map(tuple, t.column("inputs").to_pylist()), map(tuple, t.column("targets").to_pylist())))
    return rows


def unpadded(batches):
    out = []
    for b in batches:
        for r in range(b["inputs"].shape[0]):
            out.append((tuple(b["inputs"][r, : b["inputs_lengths"][r]].tolist()),
                        tuple(b["targets"][r, : b["targets_lengths"][r]].tolist())))
    return out


def test_on_the_fly_examples_are_conveyor_corrupts(c4_tokens, examples):
    batches = list(conveyor.Loader(c4_tokens, 16, inputs_length=128, seed=3, epochs=1))
    b = batches[0]
    assert set(b) == {"inputs", "targets", "inputs_lengths", "targets_lengths"}
    assert b["inputs"].dtype == np.int32 and b["inputs"].shape == (16, 128)
    assert sorted(unpadded(batches)) == sorted(offline(examples))
    assert sorted(unpadded(conveyor.Loader(examples, 16, seed=9, epochs=1))) == sorted(offline(examples))


def test_same_seed_same_batches_other_seed_other_order(examples):
    a = unpadded(conveyor.Loader(examples, 8, seed=1, epochs=1))
    assert a == unpadded(conveyor.Loader(examples, 8, seed=1, epochs=1, prefetch=7))
    assert a != unpadded(conveyor.Loader(examples, 8, seed=2, epochs=1))


def test_resume_from_state_dict_equals_the_uninterrupted_run(c4_tokens):
    kw = dict(inputs_length=64, seed=5, shuffle_buffer=100, epochs=2)
    full = unpadded(conveyor.Loader(c4_tokens, 8, **kw))
    for stop in [1, 7, 60, 130]:
        first = conveyor.Loader(c4_tokens, 8, **kw)
        head = [next(first) for _ in range(stop)]
        state = json.loads(json.dumps(first.state_dict()))  # JSON round trip
        del first
        rest = list(conveyor.Loader(c4_tokens, 8, state=state, **kw))
        assert unpadded(head) + unpadded(rest) == full, f"stopped after {stop} batches"
        again = conveyor.Loader(c4_tokens, 8, **kw)
        again.load_state_dict(state)
        assert unpadded(list(again)) == unpadded(rest)


def test_ranks_are_disjoint_and_complete(examples, monkeypatch):
    everything = sorted(unpadded(conveyor.Loader(examples, 8, seed=4, epochs=1)))
    shares = [unpadded(conveyor.Loader(examples, 8, seed=4, epochs=1, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == everything
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert unpadded(conveyor.Loader(examples, 8, seed=4, epochs=1)) == shares[2]
    # One given and the other taken from torchrun's environment would shard silently.
    for one in [dict(rank=0), dict(world_size=1)]:
        with pytest.raises(conveyor.ConveyorError, match="give both rank and world_size"):
            conveyor.Loader(examples, 8, **one)
    assert sorted(unpadded(conveyor.Loader(examples, 8, seed=4, epochs=1, rank=0, world_size=1))) == everything
    # A folder's manifest.json names the folder.
    assert unpadded(conveyor.Loader(examples / "manifest.json", 8, seed=4, epochs=1, rank=2, world_size=3)) == shares[2]


def test_len_is_the_batches_still_to_come(examples, c4_tokens):
    for world, rank, drop, align in [(1, 0, False, None), (3, 1, False, None), (3, 2, True, None),
                                     (3, 2, False, 2), (3, 1, True, 2)]:
        kw = dict(epochs=2, rank=rank, world_size=world, drop_remainder=drop, align_steps=align)
        l = conveyor.Loader(examples, 10, **kw)
        per_epoch = l.batches_per_epoch()
        assert len(l) == 2 * per_epoch == len(list(conveyor.Loader(examples, 10, **kw)))
        # At every point (a resumed loader too) what is left: torch warned once per batch
        # past len() for every batch of the second epoch.
        for k in range(2 * per_epoch):
            assert len(l) == 2 * per_epoch - k, (k, kw)
            if k % 7 == 3:
                assert len(conveyor.Loader(examples, 10, state=l.state_dict(), **kw)) == len(l)
            next(l)
        assert len(l) == 0 and list(l) == []
    with pytest.raises(TypeError, match="not known"):
        len(conveyor.Loader(c4_tokens, 10, inputs_length=64, epochs=1))
    with pytest.raises(TypeError, match="epochs=None"):
        len(conveyor.Loader(examples, 10))
    assert conveyor.Loader(c4_tokens, 10, inputs_length=64).batches_per_epoch() is None


def test_len_agrees_with_a_torch_dataloader_over_several_epochs(examples):
    torch = pytest.importorskip("torch")
    import warnings

    dl = torch.utils.data.DataLoader(conveyor.Loader(examples, 10, epochs=2), batch_size=None)
    n = len(dl)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(1 for _ in dl) == n


def test_shards_can_be_read_in_the_manifests_order(examples):
    rows = unpadded(conveyor.Loader(examples, 64, shuffle_buffer=0, shuffle_shards=False, epochs=1))
    assert rows == offline(examples)
    shuffled = unpadded(conveyor.Loader(examples, 64, shuffle_buffer=0, epochs=1))
    assert shuffled != rows and sorted(shuffled) == sorted(rows)


def test_a_shard_damaged_in_place_is_named(examples, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(examples, damaged)
    m = json.loads((damaged / "manifest.json").read_text())
    shard = damaged / m["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(conveyor.ConveyorError, match=f"{m['shards'][0]['file']}.*sha256"):
        list(conveyor.Loader(damaged, 8, shuffle_shards=False, epochs=1))


def test_the_environments_ranks_are_named_when_wrong(examples, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(conveyor.ConveyorError, match="RANK=1 and WORLD_SIZE=None"):
        conveyor.Loader(examples, 8)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(conveyor.ConveyorError, match="not integers"):
        conveyor.Loader(examples, 8)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(conveyor.ConveyorError, match="RANK=1 is not below its WORLD_SIZE=1"):
        conveyor.Loader(examples, 8)
    monkeypatch.setenv("RANK", "0")
    assert len(conveyor.Loader(examples, 8, epochs=1)) > 0


def steps_of(batches, accumulate):
    """A rank's batches grouped into optimiser steps of `accumulate` batches."""
    return [batches[i:i + accumulate] for i in range(0, len(batches), accumulate)]


def rows_of_an_epoch(source, **extra):
    return sum(b["inputs"].shape[0] for b in conveyor.Loader(source, 64, epochs=1, **extra))


def leaves_a_rank_short(rows, world, accumulate, batch):
    """Whether the epoch's last step leaves some rank fewer rows than fill its micro-batches
    but one, so that it gets an empty batch."""
    last = rows % (world * accumulate * batch)
    return last > 0 and last // world <= (accumulate - 1) * batch


def test_aligned_ranks_read_step_by_step_what_one_process_reads(examples, c4_tokens):
    kw = dict(seed=4, shuffle_buffer=50, epochs=2)
    for source, extra in [(examples, {}), (c4_tokens, {"inputs_length": 64})]:
        n = rows_of_an_epoch(source, **extra)
        for world, accumulate in [(2, 1), (3, 2)]:
            batch = next(b for b in range(2, 200) if leaves_a_rank_short(n, world, accumulate, b))
            one = list(conveyor.Loader(source, world * accumulate * batch, **kw, **extra))
            ranks = [list(conveyor.Loader(source, batch, rank=r, world_size=world, align_steps=accumulate, **kw,
                                          **extra)) for r in range(world)]
            for r in ranks:
                assert len(steps_of(r, accumulate)) == len(one) and len(r) % accumulate == 0
            for s, whole in enumerate(one):
                together = [x for r in ranks for x in unpadded(steps_of(r, accumulate)[s])]
                assert sorted(together) == sorted(unpadded([whole])), (source, world, accumulate, s)
            empty = [b for r in ranks for b in r if b["inputs"].shape[0] == 0]
            assert empty and all(set(b) == set(one[0]) for b in empty)
            assert empty[0]["inputs"].shape == (0, 0) and empty[0]["targets_lengths"].shape == (0,)
            if "inputs_length" not in extra:
                for r in range(world):
                    aligned = conveyor.Loader(source, batch, rank=r, world_size=world, align_steps=accumulate, **kw)
                    assert len(aligned) == len(ranks[r]) == 2 * aligned.batches_per_epoch()
            # With drop_remainder the short last step is dropped on every rank instead.
            drop = dict(kw, drop_remainder=True)
            one = list(conveyor.Loader(source, world * accumulate * batch, **drop, **extra))
            ranks = [list(conveyor.Loader(source, batch, rank=r, world_size=world, align_steps=accumulate, **drop,
                                          **extra)) for r in range(world)]
            assert all(len(r) == len(one) * accumulate for r in ranks)
            for s, whole in enumerate(one):
                together = [x for r in ranks for x in unpadded(steps_of(r, accumulate)[s])]
                assert sorted(together) == sorted(unpadded([whole])), (source, world, accumulate, s, "drop")


def test_aligned_ranks_resume_from_any_batch_of_the_last_step(examples):
    # 2 ranks accumulating 3: a rank can owe several empty batches after its last rows; a
    # state taken between them resumes with exactly the ones still owed.
    n = rows_of_an_epoch(examples)
    batch = next(b for b in range(2, 200) if leaves_a_rank_short(n, 2, 3, b) and (n % (6 * b)) // 2 < b)
    kw = dict(world_size=2, align_steps=3, epochs=2, seed=1, shuffle_buffer=50)
    for rank in range(2):
        straight = conveyor.Loader(examples, batch, rank=rank, **kw)
        seen = []
        for b in straight:
            seen.append((unpadded([b]), straight.state_dict()))
        end = len(seen) // 2
        for i in range(end - 3, end):
            rest = [unpadded([b]) for b in conveyor.Loader(examples, batch, rank=rank, state=seen[i][1], **kw)]
            assert rest == [x for x, _ in seen[i + 1:]], (rank, i, seen[i][1])
        assert any("padding" in s for _, s in seen)


def test_a_rank_beyond_the_items_gets_empty_batches_in_step(examples):
    # More ranks than items: the last rank has none, and with align_steps takes part in each
    # epoch's one step with an empty batch (it used to stop with "gave rank no batch" while
    # the others trained, which left them waiting in their all-reduce).
    n = rows_of_an_epoch(examples)
    last = list(conveyor.Loader(examples, 1, rank=n, world_size=n + 1, align_steps=1, epochs=2, shuffle_buffer=0))
    assert [b["inputs"].shape[0] for b in last] == [0, 0]
    with pytest.raises(conveyor.ConveyorError, match="gave rank"):
        list(conveyor.Loader(examples, 1, rank=n, world_size=n + 1, epochs=1, shuffle_buffer=0))


def test_align_steps_is_refused_where_ranks_cannot_end_epochs_together(examples, c4_tokens, conveyor_bin,
                                                                      tmp_path):
    with pytest.raises(conveyor.ConveyorError, match="align_steps=0: give the batches per optimiser step"):
        conveyor.Loader(examples, 8, world_size=2, rank=0, align_steps=0)
    with pytest.raises(conveyor.ConveyorError, match="pack them when they are written"):
        conveyor.Loader(examples, 8, world_size=2, rank=0, align_steps=1, pack=True)
    # Rows packed when written align, and their empty batches carry the packing features.
    packed = tmp_path / "packed"
    subprocess.run([conveyor_bin, "corrupt", str(c4_tokens), "--out", str(packed), "--inputs-length", "64",
                    "--pack", "-q"], check=True)
    n = rows_of_an_epoch(packed)
    batch = next(b for b in range(2, 64) if n % (2 * b) == 1)
    full, empty = [list(conveyor.Loader(packed, batch, rank=r, world_size=2, align_steps=1, epochs=1))
                   for r in range(2)]
    assert len(full) == len(empty) and empty[-1]["inputs"].shape[0] == 0
    assert set(empty[-1]) == set(full[0]) and "inputs_segment_ids" in full[0]


def test_foreign_states_and_bad_folders_are_refused(examples, c4_tokens, tmp_path):
    state = conveyor.Loader(examples, 8, seed=1).state_dict()
    with pytest.raises(conveyor.ConveyorError, match="another data configuration"):
        conveyor.Loader(examples, 8, seed=2, state=state)
    with pytest.raises(conveyor.ConveyorError, match="not a conveyor loader state"):
        conveyor.Loader(examples, 8, state={"epoch": 0})
    with pytest.raises(conveyor.ConveyorError, match="give inputs_length"):
        conveyor.Loader(c4_tokens, 8)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        conveyor.Loader(tmp_path / "nothing", 8)


def test_a_state_resumes_only_with_the_epoch_ending_it_was_saved_with(examples):
    # align_steps and drop_remainder move where an epoch ends, so a position means another
    # place under others: refused (they were taken silently), and taken with the same.
    def after_one(**kw):
        loader = conveyor.Loader(examples, 8, world_size=2, rank=0, **kw)
        next(loader)
        return loader.state_dict()

    saved = after_one(align_steps=2, drop_remainder=True)
    for other in [{}, {"align_steps": 2}, {"drop_remainder": True}, {"align_steps": 1, "drop_remainder": True}]:
        with pytest.raises(conveyor.ConveyorError, match="another align_steps or drop_remainder"):
            conveyor.Loader(examples, 8, world_size=2, rank=0, state=saved, **other)
    same = conveyor.Loader(examples, 8, world_size=2, rank=0, state=saved, align_steps=2, drop_remainder=True)
    straight = conveyor.Loader(examples, 8, world_size=2, rank=0, align_steps=2, drop_remainder=True)
    next(straight)
    assert np.array_equal(next(same)["inputs"], next(straight)["inputs"])
    # A state saved before the ending was recorded has none and is taken as it was.
    old = {k: v for k, v in after_one().items() if k != "ending"}
    assert next(conveyor.Loader(examples, 8, world_size=2, rank=0, state=old, drop_remainder=True))["inputs"].shape[0] == 8


def test_packing_gives_segment_ids_and_keeps_every_example(examples):
    batches = list(conveyor.Loader(examples, 4, pack=True, epochs=1, seed=0))
    assert {"inputs_segment_ids", "inputs_positions", "targets_segment_ids", "targets_positions"} <= set(batches[0])
    got = []
    for b in batches:
        for r in range(b["inputs"].shape[0]):
            seg, tseg = b["inputs_segment_ids"][r], b["targets_segment_ids"][r]
            for s in range(1, seg.max() + 1):
                got.append((tuple(b["inputs"][r][seg == s].tolist()), tuple(b["targets"][r][tseg == s].tolist())))
    assert sorted(got) == sorted(offline(examples))


def test_a_torch_dataloader_takes_it_without_copies(examples):
    torch = pytest.importorskip("torch")
    loader = conveyor.Loader(examples, 8, seed=0, epochs=1)
    batch = next(iter(torch.utils.data.DataLoader(loader, batch_size=None)))
    assert batch["inputs"].dtype == torch.int32 and batch["inputs"].shape[0] == 8
    raw = next(conveyor.Loader(examples, 8, seed=0, epochs=1))
    t = torch.from_numpy(raw["inputs"])
    assert t.data_ptr() == raw["inputs"].__array_interface__["data"][0]
    assert torch.equal(batch["inputs"], t)


def test_resume_across_the_epoch_boundary_and_from_a_later_epoch(examples):
    kw = dict(seed=2, shuffle_buffer=64, epochs=3)
    full = unpadded(conveyor.Loader(examples, 8, **kw))
    per_epoch = conveyor.Loader(examples, 8, **kw).batches_per_epoch()
    for stop in [per_epoch - 1, per_epoch, per_epoch + 3]:
        first = conveyor.Loader(examples, 8, **kw)
        head = [next(first) for _ in range(stop)]
        rest = list(conveyor.Loader(examples, 8, state=first.state_dict(), **kw))
        assert unpadded(head) + unpadded(rest) == full, f"stopped after {stop} batches"
    later = unpadded(conveyor.Loader(examples, 8, seed=2, shuffle_buffer=64, epoch=1, epochs=3))
    assert later == full[len(full) // 3:]
    # epochs counts from 0: starting at or past it would read nothing, silently.
    with pytest.raises(conveyor.ConveyorError, match="epochs=1 is where the loader stops"):
        conveyor.Loader(examples, 8, epoch=1, epochs=1)


def test_wrong_lengths_vocabularies_and_state_values_are_refused(examples, c4_tokens):
    # A model vocabulary of the pieces alone: the sentinels of on-the-fly corruption lie past
    # it (they failed inside the model, at the first batch).
    with pytest.raises(conveyor.ConveyorError, match="give the model 32100 embeddings"):
        conveyor.Loader(c4_tokens, 8, inputs_length=64, vocab_size=32000)
    assert next(conveyor.Loader(c4_tokens, 8, inputs_length=64, vocab_size=32100))["inputs"].max() < 32100
    with pytest.raises(conveyor.ConveyorError, match="written with inputs_length 128, not 512"):
        conveyor.Loader(examples, 8, inputs_length=512)
    with pytest.raises(conveyor.ConveyorError, match="not below the vocabulary size 1000"):
        next(conveyor.Loader(examples, 8, vocab_size=1000))
    # Settings the examples were not written with are refused, not ignored.
    with pytest.raises(conveyor.ConveyorError, match="written with noise_density 0.15, not with noise_density 0.5"):
        conveyor.Loader(examples, 8, noise_density=0.5)
    with pytest.raises(conveyor.ConveyorError, match="mean_span_length 3, not with mean_span_length 8"):
        conveyor.Loader(examples, 8, mean_span_length=8)
    assert next(conveyor.Loader(examples, 8, noise_density=0.15, mean_span_length=3.0))["inputs"].shape[0] == 8
    with pytest.raises(conveyor.ConveyorError, match="prefetch=1000000000000000"):
        conveyor.Loader(examples, 8, prefetch=10**15)
    # A negative count is named (the extension's OverflowError named no parameter).
    with pytest.raises(conveyor.ConveyorError, match="batch_size=-1"):
        conveyor.Loader(examples, -1)
    with pytest.raises(conveyor.ConveyorError, match="seed=-3"):
        conveyor.Loader(examples, 8, seed=-3)
    for bad in [{"epoch": "x", "position": 0, "fingerprint": "0"},
                {"epoch": 0, "position": -1, "fingerprint": "0"},
                {"epoch": 0, "position": 0, "fingerprint": "zz"}]:
        with pytest.raises(conveyor.ConveyorError, match="not a conveyor loader state"):
            conveyor.Loader(examples, 8, state=bad)
    # A position past the data (an edited state with the right fingerprint) is named, not
    # taken as the start of the next epoch.
    state = conveyor.Loader(examples, 8).state_dict()
    for position in [10**6, 2**64 - 1]:
        edited = dict(state, position=position)
        with pytest.raises(conveyor.ConveyorError, match=f"position {position} .* past the end"):
            next(conveyor.Loader(examples, 8, state=edited))


def test_ids_are_checked_against_the_datas_own_vocabulary(examples, tmp_path):
    # Without vocab_size, a manifest whose size lies below the ids is caught all the same.
    import json
    import shutil
    edited = tmp_path / "edited"
    shutil.copytree(examples, edited)
    m = json.loads((edited / "manifest.json").read_text())
    m["settings"]["vocab_size"] = 1000
    (edited / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(conveyor.ConveyorError, match="not below the vocabulary size 1000"):
        next(conveyor.Loader(edited, 8))


def test_manifests_and_states_edited_by_hand_are_refused(examples, tmp_path):
    import shutil
    edited = tmp_path / "edited"
    shutil.copytree(examples, edited)
    m = json.loads((edited / "manifest.json").read_text())

    def write(**settings):
        e = json.loads(json.dumps(m))
        e["settings"].update(settings)
        (edited / "manifest.json").write_text(json.dumps(e))

    # Feature lengths below the rows': each row was cut to them (its EOS lost) without a word.
    for key, value in [("inputs_length", 64), ("targets_length", 10)]:
        write(**{key: value})
        what = key.split("_")[0]
        with pytest.raises(conveyor.ConveyorError, match=f"more than the {what} length {value}"):
            next(conveyor.Loader(edited, 8, shuffle_buffer=0, shuffle_shards=False))
    # A shard listed twice was read twice an epoch, in place of another.
    e = json.loads(json.dumps(m))
    e["shards"][1] = e["shards"][0]
    (edited / "manifest.json").write_text(json.dumps(e))
    with pytest.raises(conveyor.ConveyorError, match="twice"):
        conveyor.Loader(edited, 8)
    with pytest.raises(conveyor.ConveyorError, match="twice"):
        conveyor.read_manifest(edited)
    # A shard file given for the folder is named as a file.
    with pytest.raises(conveyor.ConveyorError, match="is a file, not a dataset folder"):
        conveyor.Loader(examples / m["shards"][0]["file"], 8)
    # States no loader of this configuration could save: more empty batches owed than
    # align_steps allows, an epoch past the last one.
    aligned = conveyor.Loader(examples, 8, align_steps=2).state_dict()
    with pytest.raises(conveyor.ConveyorError, match="owes 99 empty batch"):
        conveyor.Loader(examples, 8, align_steps=2, state=dict(aligned, padding=99))
    state = conveyor.Loader(examples, 8, epochs=3).state_dict()
    with pytest.raises(conveyor.ConveyorError, match="epoch 7, past the last one"):
        conveyor.Loader(examples, 8, epochs=3, state=dict(state, epoch=7))
    # The state after the last epoch's last batch resumes to nothing, as it should.
    done = dict(state, epoch=3, position=0)
    assert list(conveyor.Loader(examples, 8, epochs=3, state=done)) == []
    # A key no loader writes is refused, as torch's strict load_state_dict refuses one.
    with pytest.raises(conveyor.ConveyorError, match='unknown key "shuffle_seed"'):
        conveyor.Loader(examples, 8, epochs=3, state=dict(state, shuffle_seed=1))
    loader = conveyor.Loader(examples, 8, epochs=3)
    with pytest.raises(conveyor.ConveyorError, match='unknown key "shuffle_seed"'):
        loader.load_state_dict(dict(state, shuffle_seed=1))


def test_a_shard_of_other_column_types_is_an_error_naming_it(c4_tokens, tmp_path):
    # Rewritten by another tool (large lists, signed ids), its manifest's sums updated: an
    # error naming the shard, never a quiet end of the data (the reading thread panicked and
    # the loader read that as the end: 0 batches).
    import hashlib
    import shutil

    import pyarrow as pa

    for ids in [pa.large_list(pa.uint32()), pa.list_(pa.int64())]:
        folder = tmp_path / str(ids).replace("<", "_").replace(">", "_").replace(" ", "_").replace(":", "_")
        shutil.copytree(c4_tokens, folder)
        m = json.loads((folder / "manifest.json").read_text())
        shard = folder / m["shards"][0]["file"]
        t = pq.read_table(shard)
        pq.write_table(t.set_column(t.schema.get_field_index("tokens"), "tokens", t.column("tokens").cast(ids)), shard)
        m["shards"][0]["bytes"] = shard.stat().st_size
        m["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(conveyor.ConveyorError, match=m["shards"][0]["file"]):
            list(conveyor.Loader(folder, 8, inputs_length=64, epochs=1, shuffle_buffer=0))


def test_a_dataloader_worker_process_is_refused(examples):
    torch = pytest.importorskip("torch")
    import copy
    import pickle

    loader = conveyor.Loader(examples, 8, seed=0, epochs=1)
    with pytest.raises(Exception, match="cannot be iterated in another process"):
        next(iter(torch.utils.data.DataLoader(loader, batch_size=None, num_workers=1)))
    # Spawned or forkserver workers pickle the dataset: the same advice, not "cannot pickle".
    for copy_it in [pickle.dumps, copy.deepcopy]:
        with pytest.raises(conveyor.ConveyorError, match="num_workers=0"):
            copy_it(loader)


def test_a_forked_child_neither_hangs_nor_panics(examples):
    # The reading thread is the parent's: a restart in the child waited forever for it, and
    # dropping the child's copy printed a Rust panic.
    code = f"""
import os, sys, conveyor
L = conveyor.Loader({str(examples)!r}, 4, epochs=1)
next(L)
pid = os.fork()
if pid == 0:
    try:
        L.load_state_dict(L.state_dict())
        code = 3
    except conveyor.ConveyorError as e:
        code = 0 if "another process" in str(e) else 4
    del L
    os._exit(code)
_, status = os.waitpid(pid, 0)
assert next(L)["inputs"].shape[0] == 4
print("child", os.waitstatus_to_exitcode(status))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "child 0", r.stdout + r.stderr
    assert "panic" not in r.stderr.lower(), r.stderr


def test_the_extension_loads_after_torch():
    # Trainers import torch (and CUDA's libraries where there are GPUs) first; the
    # extension's allocator must not need static TLS space they may have taken.
    code = "import torch, numpy; import conveyor; print(conveyor.lengths(512))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(568, 114)"
