"""Shared paths for the Python package's tests: the repository, ../shared/data and the
`conveyor` binary (CONVEYOR_BIN, which `make test` sets)."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SPIECE = DATA / "spiece" / "t5-spiece.model"
C4 = DATA / "c4" / "c4-train.00000-of-01024.first600.json.gz"


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
