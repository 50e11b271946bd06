"""conveyor.span_corruption equals `conveyor corrupt` for the same seed, shard by shard, and
conveyor.lengths is T5's random_spans_helper."""

import json
import random
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

import conveyor
from conftest import SPIECE


def shards(folder):
    m = json.loads((folder / "manifest.json").read_text())
    return [folder / s["file"] for s in m["shards"]]


@pytest.mark.parametrize("inputs_length,seed,density,mean", [(128, 3, 0.15, 3.0), (64, 11, 0.3, 2.0)])
def test_examples_equal_conveyor_corrupt(conveyor_bin, c4_tokens, tmp_path, inputs_length, seed, density, mean):
    out = tmp_path / "examples"
    subprocess.run(
        [conveyor_bin, "corrupt", str(c4_tokens), "--out", str(out), "--inputs-length", str(inputs_length),
         "--seed", str(seed), "--noise-density", str(density), "--mean-span-length", str(mean), "-q"],
        check=True,
    )
    written = [pq.read_table(f) for f in shards(out)]
    token_shards = shards(c4_tokens)
    assert len(token_shards) == len(written) >= 2
    for k, (src, table) in enumerate(zip(token_shards, written)):
        docs = [np.asarray(d, dtype=np.int32) for d in pq.read_table(src).column("tokens").to_pylist()]
        inputs, targets = conveyor.span_corruption(
            docs, inputs_length=inputs_length, seed=seed, vocab_size=32000, shard=k,
            noise_density=density, mean_span_length=mean,
        )
        assert [x.tolist() for x in inputs] == table.column("inputs").to_pylist(), f"shard {k}"
        assert [x.tolist() for x in targets] == table.column("targets").to_pylist(), f"shard {k}"


def test_another_seed_or_shard_gives_other_examples():
    doc = np.arange(3, 2000, dtype=np.int32)
    a = conveyor.span_corruption(doc, inputs_length=128, seed=0, vocab_size=32000)
    b = conveyor.span_corruption(doc, inputs_length=128, seed=1, vocab_size=32000)
    c = conveyor.span_corruption(doc, inputs_length=128, seed=0, vocab_size=32000, shard=1)
    again = conveyor.span_corruption(list(doc), inputs_length=128, seed=0, vocab_size=32000)
    flat = lambda r: [x.tolist() for x in r[0]]  # noqa: E731
    assert flat(a) == flat(again)
    assert flat(a) != flat(b) and flat(a) != flat(c)
    # Every input keeps the non-noise tokens in order, sentinels count down from 32099.
    sentinels = [t for t in a[0][0].tolist() if t >= 32000]
    assert sentinels == list(range(32099, 32099 - len(sentinels), -1))
    assert all(x[-1] == 1 for x in a[0] + a[1])


def helper(inputs_length, density, mean):
    """T5's random_spans_helper, transcribed from its definition (Python rounding)."""
    def lens(n):
        noise = int(round(n * density))
        spans = int(round(noise / mean))
        return n - noise + spans + 1, noise + spans + 1

    n = inputs_length - 1
    while lens(n + 1)[0] <= inputs_length:
        n += 1
    inputs, targets = lens(n)
    if density == 0.5 and targets > inputs:
        n -= 1
        targets -= 1
    return n, targets


def test_lengths_are_t5s_random_spans_helper():
    assert conveyor.lengths(512) == (568, 114)
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randrange(2, 2048)
        density = rng.choice([0.05, 0.15, 0.3, 0.5, rng.uniform(0.01, 0.9)])
        mean = rng.choice([1.0, 3.0, rng.uniform(1.0, 10.0)])
        assert conveyor.lengths(n, density, mean) == helper(n, density, mean), (n, density, mean)


def test_bad_settings_and_foreign_ids_are_refused():
    with pytest.raises(conveyor.ConveyorError, match="noise density"):
        conveyor.lengths(128, 1.5)
    # No noise: refused by lengths as by span_corruption (lengths answered T5's helper's
    # figures for a setting nothing could then use).
    for call in (lambda: conveyor.lengths(512, 0.0),
                 lambda: conveyor.span_corruption([5, 6], inputs_length=32, seed=0, vocab_size=400,
                                                  noise_density=0.0)):
        with pytest.raises(conveyor.ConveyorError, match="asks for no noise"):
            call()
    with pytest.raises(conveyor.ConveyorError, match="not below vocab_size 400"):
        conveyor.span_corruption([5, 6, 400], inputs_length=32, seed=0, vocab_size=400)
    with pytest.raises(conveyor.ConveyorError, match="not a vocabulary id"):
        conveyor.span_corruption(np.array([5, -1]), inputs_length=32, seed=0, vocab_size=400)
    # More noise spans than sentinels would number sentinels down into real pieces: refused
    # as `conveyor corrupt` refuses it (inputs 2048 make 114 spans; extra_ids=0 none at all).
    doc = np.arange(3, 5000) % 390 + 3
    with pytest.raises(conveyor.ConveyorError, match="114 noise spans, but there are only 100 sentinels"):
        conveyor.span_corruption(doc, inputs_length=2048, seed=0, vocab_size=400)
    with pytest.raises(conveyor.ConveyorError, match="only 0 sentinels"):
        conveyor.span_corruption(doc, inputs_length=32, seed=0, vocab_size=400, extra_ids=0)
    with pytest.raises(conveyor.ConveyorError, match="eos_id 700 is not below vocab_size 400"):
        conveyor.span_corruption(doc, inputs_length=32, seed=0, vocab_size=400, eos_id=700)
    # At the most spans the sentinels allow, every sentinel lies past the vocabulary's pieces.
    inputs, targets = conveyor.span_corruption(doc, inputs_length=1024, seed=0, vocab_size=400)
    ids = np.concatenate(inputs + targets)
    assert ids.max() < 500 and (ids >= 400).any() and not ((ids >= 393) & (ids < 400)).any()


def test_documents_come_as_arrays_lists_or_object_arrays():
    docs = [np.arange(3, 300, dtype=np.int64), np.arange(5, 90, dtype=np.int64)]
    want = conveyor.span_corruption(docs, inputs_length=64, seed=1, vocab_size=32000)
    as_lists = conveyor.span_corruption([d.tolist() for d in docs], inputs_length=64, seed=1, vocab_size=32000)
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = docs
    as_objects = conveyor.span_corruption(objects, inputs_length=64, seed=1, vocab_size=32000)
    flat = lambda r: [x.tolist() for x in r[0] + r[1]]  # noqa: E731
    assert flat(want) == flat(as_lists) == flat(as_objects)
    assert conveyor.span_corruption([], inputs_length=64, seed=1, vocab_size=32000) == ([], [])
    with pytest.raises(conveyor.ConveyorError, match="2-D array"):
        conveyor.span_corruption(np.zeros((2, 5), np.int32), inputs_length=64, seed=1, vocab_size=32000)
    with pytest.raises(conveyor.ConveyorError, match="array of float64: give integer ids"):
        conveyor.span_corruption(np.array([5.0, 7.0]), inputs_length=64, seed=1, vocab_size=32000)
    # CPU tensors, one or a list of them (refused before with "not an instance of 'Sequence'").
    torch = pytest.importorskip("torch")
    tensors = [torch.from_numpy(d) for d in docs]
    assert flat(want) == flat(conveyor.span_corruption(tensors, inputs_length=64, seed=1, vocab_size=32000))
    one = conveyor.span_corruption(docs[0], inputs_length=64, seed=1, vocab_size=32000)
    assert flat(one) == flat(conveyor.span_corruption(tensors[0], inputs_length=64, seed=1, vocab_size=32000))
