"""conveyor.Tokenizer against the SentencePiece library (0.2.1): the same ids on every
document of the C4 sample and on edge cases, decoding, batches independent of threads."""

import gzip
import json
import random

import numpy as np
import pytest
import sentencepiece as spm

import conveyor
from conftest import C4, SPIECE

EDGE = [
    "",
    " ",
    "\t\n\r\x00\x01\x7f",
    "<pad></s><unk> literal <pad>",
    "e\u0301 n\u0303 a\u0308\u0301\u0327",  # combining marks
    "0" * 500 + "1234567890" * 40,  # long digit runs
    "ﬁ ① Ｆｕｌｌ width ㎏",  # NFKC folds
    "   leading and   inner   spaces   ",
    "日本語のテキストと emoji 🤖🚂",
    "\u200b\u200d\ufeffzero widths",
]


@pytest.fixture(scope="module")
def both():
    return conveyor.Tokenizer.from_file(SPIECE), spm.SentencePieceProcessor(model_file=str(SPIECE))


@pytest.fixture(scope="module")
def c4_texts():
    with gzip.open(C4, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def test_ids_equal_sentencepiece_on_every_c4_document(both, c4_texts):
    ours, ref = both
    assert len(c4_texts) == 600
    for i, text in enumerate(c4_texts):
        assert ours.encode(text) == ref.encode(text), f"document {i}"


def test_ids_equal_sentencepiece_on_edge_cases_and_random_strings(both):
    ours, ref = both
    rng = random.Random(7)
    alphabet = "ab é\u0301\t\n0123<>/ﬁ①日🤖\u200b\x00-."
    texts = EDGE + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(60))) for _ in range(300)]
    for t in texts:
        assert ours.encode(t) == ref.encode(t), repr(t)


def test_batches_match_single_encodes_whatever_the_threads(both, c4_texts):
    ours, _ = both
    one = ours.encode_batch(c4_texts[:200], threads=1)
    four = ours.encode_batch(c4_texts[:200], threads=4)
    default = ours.encode_batch(c4_texts[:200])
    for i, text in enumerate(c4_texts[:200]):
        assert one[i].dtype == np.int32
        assert one[i].tolist() == four[i].tolist() == default[i].tolist() == ours.encode(text)
    with pytest.raises(conveyor.ConveyorError, match="at most 1024"):
        ours.encode_batch(c4_texts[:2], threads=100_000)


def test_decode_matches_sentencepiece(both, c4_texts):
    ours, ref = both
    for text in c4_texts[:100] + EDGE:
        ids = ref.encode(text)
        assert ours.decode(ids) == ref.decode(ids), repr(text[:60])
    # generate()'s rows: numpy arrays and CPU tensors too.
    ids = ref.encode(c4_texts[0])
    assert ours.decode(np.array(ids, dtype=np.int64)) == ref.decode(ids)
    torch = pytest.importorskip("torch")
    assert ours.decode(torch.tensor(ids)) == ref.decode(ids)
    with pytest.raises(conveyor.ConveyorError, match="ids >= 0"):
        ours.decode(torch.tensor([-100, 5]))


def test_vocabulary_facts(both):
    ours, ref = both
    assert ours.vocab_size == ref.get_piece_size() == 32000
    assert (ours.pad_id, ours.eos_id, ours.unk_id) == (ref.pad_id(), ref.eos_id(), ref.unk_id())
    assert len(ours.sha256) == 64


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.model"):
        conveyor.Tokenizer.from_file(tmp_path / "nothing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(conveyor.ConveyorError, match="junk.model: not a usable SentencePiece model"):
        conveyor.Tokenizer.from_file(junk)


def test_encode_batch_works_in_a_forked_child():
    # A child forked after the parent's thread pools were built (DataLoader workers,
    # datasets.map(num_proc=...)) has none of their threads: encode_batch waited forever.
    import os
    import signal

    tok = conveyor.Tokenizer.from_file(SPIECE)
    texts = ["Hello world, this is a test."] * 50
    want = [a.tolist() for a in tok.encode_batch(texts)]
    assert [a.tolist() for a in tok.encode_batch(texts, threads=2)] == want
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        signal.alarm(30)
        ok = [a.tolist() for a in tok.encode_batch(texts)] == want
        ok = ok and [a.tolist() for a in tok.encode_batch(texts, threads=2)] == want
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"


def test_it_pickles_as_its_model_file_and_refuses_a_changed_one(tmp_path):
    # A spawned DataLoader worker or datasets.map(num_proc=...) pickles it (datasets keys its
    # cache on the pickle, which was refused, so every map ran again).
    import pickle
    import shutil
    model = tmp_path / "spiece.model"
    shutil.copy(SPIECE, model)
    tok = conveyor.Tokenizer.from_file(model)
    blob = pickle.dumps(tok)
    again = pickle.loads(blob)
    assert again.encode("Pickled, then unpickled.") == tok.encode("Pickled, then unpickled.")
    assert pickle.dumps(again) == blob
    shutil.copy(C4.parent.parent / "spiece" / "spm-example-20k.model", model)
    with pytest.raises(conveyor.ConveyorError, match="not the SentencePiece model this Tokenizer was pickled with"):
        pickle.loads(blob)
