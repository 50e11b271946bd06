"""examples/hf_t5_pretrain.py: a few steps of transformers' T5 pre-trained from conveyor
token shards through conveyor.Loader; stopped at a checkpoint and resumed, it logs the same
losses as the run that did not stop."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("transformers")


def run(tokens, out, steps, *extra):
    subprocess.run([sys.executable, str(ROOT / "examples" / "hf_t5_pretrain.py"), "--tokens", str(tokens),
                    "--out", str(out), "--steps", str(steps), "--save-every", "3", "--batch-size", "4",
                    "--inputs-length", "64", *extra], check=True, capture_output=True)
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
