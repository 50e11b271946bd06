"""What the loader's first-read checksum costs: sha256 of a token folder's shards beside
one on-the-fly epoch of conveyor.Loader over the same folder (which includes that check).

    python scripts/loader_verify_cost.py TOKENS [--batch 32] [--inputs-length 512]
"""

import argparse
import hashlib
import json
import pathlib
import time

import conveyor

p = argparse.ArgumentParser()
p.add_argument("tokens")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--inputs-length", type=int, default=512)
a = p.parse_args()
d = pathlib.Path(a.tokens)
m = json.loads((d / "manifest.json").read_text())
mb = sum(s["bytes"] for s in m["shards"]) / 1e6
t = time.perf_counter()
for s in m["shards"]:
    hashlib.sha256((d / s["file"]).read_bytes()).hexdigest()
h = time.perf_counter() - t
for _ in range(3):
    t = time.perf_counter()
    n = sum(1 for _ in conveyor.Loader(str(d), a.batch, inputs_length=a.inputs_length, epochs=1))
    e = time.perf_counter() - t
    print(
        f"epoch: {n} batches of {a.batch} x {a.inputs_length} in {e:.3f} s; "
        f"sha256 of its {len(m['shards'])} shards ({mb:.1f} MB): {h:.3f} s ({100 * h / e:.1f}% of the epoch)"
    )
