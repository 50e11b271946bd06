"""Shared paths for the Python package's tests: the repository, ../shared/data and the
`conveyor` binary (CONVEYOR_BIN, which `make test` sets)."""

import os
import pathlib
import shutil
import signal
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SPIECE = DATA / "spiece" / "t5-spiece.model"
C4 = DATA / "c4" / "c4-train.00000-of-01024.first600.json.gz"


def run_bounded(args, timeout, check=False):
    """`subprocess.run(args, capture_output=True, text=True)` that fails the test after
    `timeout` seconds instead of hanging the suite, and kills the command's whole process
    group then, so that torchrun's ranks go with it."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args[:4]}... did not finish in {timeout} s; its stderr ends:\n{err[-3000:]}")
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        pytest.fail(f"{args[:4]}... exited {proc.returncode}; its stderr ends:\n{err[-3000:]}")
    return done


@pytest.fixture(scope="session")
def conveyor_bin():
    path = os.environ.get("CONVEYOR_BIN") or shutil.which("conveyor")
    if not path:
        pytest.fail("set CONVEYOR_BIN to a release build of `conveyor` (make test does)")
    return path


@pytest.fixture(scope="session")
def c4_tokens(conveyor_bin, tmp_path_factory):
    """The C4 sample ingested with the T5 vocabulary into several token shards."""
    out = tmp_path_factory.mktemp("c4") / "tokens"
    subprocess.run(
        [conveyor_bin, "ingest", str(C4), "--vocab", str(SPIECE), "--out", str(out),
         "--shard-tokens", "120000", "-q"],
        check=True,
    )
    return out
