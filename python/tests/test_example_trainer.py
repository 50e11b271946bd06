"""examples/hf_t5_pretrain.py: a few steps of transformers' T5 pre-trained from conveyor
token shards through conveyor.Loader; stopped at a checkpoint and resumed, it logs the same
losses as the run that did not stop; under torchrun, two ranks train as one process with
twice the batch across epoch ends, and resume so too."""

import gzip
import json
import subprocess
import sys

import pytest

import conveyor
from conftest import C4, ROOT, SPIECE, run_bounded

pytest.importorskip("transformers")

EXAMPLE = str(ROOT / "examples" / "hf_t5_pretrain.py")


def run(tokens, out, steps, *extra, ranks=1):
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    # Bounded: a rank stuck at teardown would otherwise hang the whole suite.
    run_bounded([*launch, EXAMPLE, "--tokens", str(tokens), "--out", str(out), "--steps", str(steps),
                 "--save-every", "3", "--batch-size", "4", "--inputs-length", "64", *extra],
                timeout=600, check=True)
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_stopped_and_resumed_run_equals_the_straight_one(c4_tokens, tmp_path):
    straight = run(c4_tokens, tmp_path / "straight", 8)
    assert len(straight) == 8 and straight[-1] < straight[0]
    run(c4_tokens, tmp_path / "stopped", 3)
    # As if it had crashed after logging step 4 past the checkpoint: the resume redoes step 4.
    with open(tmp_path / "stopped" / "log.jsonl", "a") as log:
        log.write(json.dumps({"step": 4, "loss": 99.0}) + "\n")
    resumed = run(c4_tokens, tmp_path / "stopped", 8, "--resume")
    assert len(resumed) == 8
    assert resumed == pytest.approx(straight, rel=1e-6, abs=1e-6)


@pytest.fixture(scope="module")
def small_tokens(conveyor_bin, tmp_path_factory):
    """The C4 sample's first 11 documents: 31 examples of 64 inputs an epoch."""
    work = tmp_path_factory.mktemp("small")
    with gzip.open(C4, "rt") as f:
        docs = [next(f) for _ in range(11)]
    (work / "docs.jsonl").write_text("".join(docs))
    subprocess.run([conveyor_bin, "ingest", str(work / "docs.jsonl"), "--vocab", str(SPIECE), "--out",
                    str(work / "tokens"), "-q"], check=True)
    return work / "tokens"


def test_two_ranks_train_as_one_process_with_twice_the_batch(small_tokens, tmp_path):
    # Steps of 2 x 3 rows: an epoch of 31 is 5 full steps and one whose only row is rank 0's,
    # so rank 1 joins that step with an empty batch (without align_steps it would start its
    # next epoch there, and every later step would differ).
    rows = sum(b["inputs"].shape[0] for b in conveyor.Loader(small_tokens, 1, inputs_length=64, epochs=1))
    assert rows % 6 == 1, f"{rows} examples an epoch: the test needs an epoch to end on a lone row"
    same = ("--dropout", "0")
    one = run(small_tokens, tmp_path / "one", 12, "--batch-size", "6", *same)
    two = run(small_tokens, tmp_path / "two", 12, "--batch-size", "3", *same, ranks=2)
    assert len(one) == len(two) == 12 and one[-1] < one[0]
    assert two == pytest.approx(one, rel=1e-5)
    # Stopped at the checkpoint after the first epoch's last step (rank 1's empty batch) and
    # resumed: the same losses as the straight run.
    run(small_tokens, tmp_path / "stopped", 6, "--batch-size", "3", *same, ranks=2)
    resumed = run(small_tokens, tmp_path / "stopped", 12, "--batch-size", "3", *same, "--resume", ranks=2)
    assert resumed == pytest.approx(two, rel=1e-6, abs=1e-6)
    # A checkpoint of two ranks is not resumed by one process.
    alone = run_bounded([sys.executable, EXAMPLE, "--tokens", str(small_tokens), "--out", str(tmp_path / "stopped"),
                         "--steps", "13", "--resume"], timeout=600)
    assert alone.returncode != 0 and "written by 2 process(es)" in alone.stderr
