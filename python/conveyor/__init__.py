"""conveyor for Python trainers: the SentencePiece-exact tokenizer, T5 span corruption and
conveyor's manifests, from the same Rust code as the `conveyor` command line.

    import conveyor
    tok = conveyor.Tokenizer.from_file("spiece.model")
    ids = tok.encode_batch(["a document", "another"])          # list of int32 arrays
    inputs, targets = conveyor.span_corruption(ids, inputs_length=512, seed=0,
                                               vocab_size=tok.vocab_size)
    for batch in conveyor.Loader("tokens/", 32, inputs_length=512, seed=0):
        ...                                  # dict of int32 numpy arrays
"""

from ._loader import Loader
from ._native import (
    ConveyorError,
    Tokenizer,
    lengths,
    read_manifest,
    span_corruption,
)

__all__ = ["ConveyorError", "Loader", "Tokenizer", "lengths", "read_manifest", "span_corruption"]
