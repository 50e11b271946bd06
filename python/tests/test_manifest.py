"""conveyor.read_manifest: token and example manifests as dicts, checked as the CLI checks
them."""

import json
import subprocess

import pytest

import conveyor
from conftest import SPIECE


def test_token_and_example_manifests_read(conveyor_bin, c4_tokens, tmp_path):
    m = conveyor.read_manifest(c4_tokens)
    assert m["format"] == "conveyor.tokens" and m["totals"]["documents"] == 600
    assert conveyor.read_manifest(c4_tokens / "manifest.json") == m
    out = tmp_path / "ex"
    subprocess.run([conveyor_bin, "corrupt", str(c4_tokens), "--out", str(out), "--inputs-length", "64", "-q"],
                   check=True)
    e = conveyor.read_manifest(out)
    assert e["format"] == "conveyor.examples" and e["examples"] > 0


def test_foreign_and_escaping_manifests_are_refused(c4_tokens, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    m = json.loads((c4_tokens / "manifest.json").read_text())
    m["shards"][0]["file"] = "../../etc/passwd"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(conveyor.ConveyorError, match="manifest.json"):
        conveyor.read_manifest(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(conveyor.ConveyorError, match="not a conveyor token, example or clean manifest"):
        conveyor.read_manifest(bad)
    with pytest.raises(FileNotFoundError):
        conveyor.read_manifest(tmp_path / "missing")


def test_a_damaged_manifest_names_its_file(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "conveyor.tokens", ')
    with pytest.raises(conveyor.ConveyorError, match="manifest.json: not JSON"):
        conveyor.read_manifest(tmp_path)
