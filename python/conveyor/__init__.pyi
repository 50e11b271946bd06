from os import PathLike
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]
_Ids = Union[npt.NDArray[np.integer[Any]], Sequence[int]]

class ConveyorError(ValueError):
    """Bad input, a foreign state or another vocabulary; the message names the file."""

class Tokenizer:
    """conveyor's SentencePiece unigram encoder: ids identical to the library's."""

    @staticmethod
    def from_file(path: _Path) -> "Tokenizer":
        """Opens a SentencePiece model file (e.g. the T5 vocabulary)."""
    def encode(self, text: str) -> list[int]:
        """The ids of `text`, no EOS appended."""
    def encode_batch(
        self, texts: Sequence[str], threads: Optional[int] = None
    ) -> list[npt.NDArray[np.int32]]:
        """The ids of every text, encoded in parallel with the GIL released."""
    def decode(self, ids: Union[Sequence[int], npt.ArrayLike]) -> str:
        """The text of `ids`, as SentencePiece's decode renders it (an id beyond the pieces,
        e.g. a sentinel, shows as `<id N?>` where SentencePiece raises)."""
    @property
    def vocab_size(self) -> int:
        """Pieces in the model (extra ids not included)."""
    @property
    def pad_id(self) -> Optional[int]: ...
    @property
    def eos_id(self) -> Optional[int]: ...
    @property
    def unk_id(self) -> int: ...
    @property
    def sha256(self) -> str:
        """sha256 of the model file, as conveyor's manifests record it."""

def span_corruption(
    tokens: Union[_Ids, Sequence[_Ids]],
    *,
    inputs_length: int,
    seed: int,
    vocab_size: int,  # SentencePiece pieces (32000), sentinels counted down from + extra_ids
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    extra_ids: int = 100,
    epoch: int = 0,
    shard: int = 0,
    eos_id: int = 1,
) -> tuple[list[npt.NDArray[np.int32]], list[npt.NDArray[np.int32]]]:
    """T5 span corruption of one document or one shard's documents: (inputs, targets),
    the examples `conveyor corrupt` writes for the same seed, epoch and shard."""

def lengths(
    inputs_length: int, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> tuple[int, int]:
    """T5's random_spans_helper: (tokens_length, targets_length)."""

def read_manifest(path: _Path) -> dict[str, Any]:
    """A token, example or clean folder's manifest.json, checked, as a dict."""

class Loader:
    """Batches from conveyor example or token shards as dicts of int32 numpy arrays, with a
    seeded order, rank sharding, packing, span corruption on the fly and exact resume."""

    def __init__(
        self,
        path: _Path,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 10000,
        shuffle_shards: bool = True,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        inputs_length: Optional[int] = None,
        noise_density: Optional[float] = None,
        mean_span_length: Optional[float] = None,
        pack: bool = False,
        pad_to: Literal["feature", "longest"] = "feature",
        drop_remainder: bool = False,
        prefetch: int = 2,
        epochs: Optional[int] = None,
        vocab_size: Optional[int] = None,
        align_steps: Optional[int] = None,
        state: Optional[dict[str, Any]] = None,
    ) -> None: ...
    # epochs=N stops before epoch N: epochs 0 to N - 1 in all, counting the starting
    # `epoch` (a resumed loader runs the rest of them); N at or below `epoch` is refused.
    def __iter__(self) -> "Loader": ...
    def __next__(self) -> dict[str, npt.NDArray[np.int32]]: ...
    def __len__(self) -> int:
        """The batches still to come (example shards read as written, ``epochs`` given;
        else TypeError)."""
    def batches_per_epoch(self) -> Optional[int]:
        """Batches per epoch for this rank (example shards read as written); with
        ``align_steps`` the same on every rank, empty batches included; None when not known
        before reading."""
    def state_dict(self) -> dict[str, Any]:
        """{epoch, position, fingerprint, ending}: where the loader stands; JSON-able."""
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues right after the batch the state was taken at."""
