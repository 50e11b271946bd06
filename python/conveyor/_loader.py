"""conveyor.Loader: the Python face of conveyor's streaming loader."""

import os

from . import _native

try:  # A torch IterableDataset when torch is installed, so DataLoader(loader, batch_size=None) works.
    from torch.utils.data import IterableDataset as _Base
except Exception:  # pragma: no cover - JAX or plain numpy users, or a torch that fails to load
    _Base = object


def _ranks_from_environment():
    """(rank, world_size) from torchrun's RANK and WORLD_SIZE, both or neither."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return 0, 1
    if rank is None or world is None:
        raise _native.ConveyorError(
            f"the environment sets RANK={rank} and WORLD_SIZE={world}: set both (as torchrun does) "
            "or neither, or pass rank= and world_size=")
    try:
        r, w = int(rank), int(world)
    except ValueError:
        raise _native.ConveyorError(
            f"the environment's RANK={rank!r} and WORLD_SIZE={world!r} are not integers: fix them, "
            "or pass rank= and world_size=") from None
    if not 0 <= r < w:
        raise _native.ConveyorError(
            f"the environment's RANK={r} is not below its WORLD_SIZE={w}: fix them, or pass "
            "rank= and world_size=")
    return r, w


class Loader(_Base):
    """Batches from conveyor example shards, packed shards, or token shards span-corrupted on
    the fly, as dicts of int32 numpy arrays: ``inputs``, ``targets`` (rows x width),
    ``inputs_lengths``, ``targets_lengths``, and with packing ``inputs_segment_ids``,
    ``inputs_positions``, ``targets_segment_ids``, ``targets_positions``.

    The order is a function of (seed, epoch): shards in a seeded order, items shuffled within
    windows of ``shuffle_buffer``; rank ``r`` of ``world_size`` takes every ``world_size``-th
    item, so ranks are disjoint and cover the epoch. ``rank`` and ``world_size`` (both, or
    neither) default to the ``RANK`` and ``WORLD_SIZE`` that torchrun sets.
    ``state_dict()`` is a small dict; ``Loader(..., state=s)`` or ``load_state_dict(s)``
    continues exactly after the batch it was taken at (``state`` wins over ``epoch``). ``epochs=None`` runs until stopped;
    ``epochs=N`` stops after epoch N - 1. Iterating again continues the stream; ``len()`` is
    the batches still to come (known for example shards with ``epochs`` given),
    ``batches_per_epoch()`` an epoch's. ``shuffle_shards=False`` reads the shards in the
    manifest's order (with ``shuffle_buffer=0``, the order they were written in). Shards are
    checked against their manifest's sha256 when first read. ``vocab_size`` (the model's) turns an id
    beyond it into an error naming the shard and row. Example shards keep the lengths they
    were written with: an ``inputs_length``, ``noise_density`` or ``mean_span_length`` that
    differs is refused (for token shards they default to T5's 0.15 and 3.0).

    Rank ``r`` of ``world_size`` alone can end an epoch a batch before another rank does.
    ``align_steps=A`` (the batches per optimiser step: 1, or the gradient accumulation)
    ends every rank's epochs after the same number of batches, a multiple of ``A``: the
    epoch's last step holds exactly its last items, and a rank with none of them left gets
    batches of no rows (arrays of shape (0, 0), lengths of shape (0,)), which a DDP loop
    must still join with a backward that adds nothing (see docs/python.md). Step by step,
    the ranks together then read exactly what one process reads with batches of
    ``world_size x A x batch_size``; with ``drop_remainder`` the short last step is dropped
    on every rank instead.

    With ``torch.utils.data.DataLoader(loader, batch_size=None)`` keep ``num_workers=0``:
    the loader prepares ``prefetch`` batches ahead on its own threads.
    """

    def __init__(self, path, batch_size, *, seed=0, epoch=0, shuffle_buffer=10000, shuffle_shards=True, rank=None,
                 world_size=None, inputs_length=None, noise_density=None, mean_span_length=None,
                 pack=False, pad_to="feature", drop_remainder=False, prefetch=2, epochs=None,
                 vocab_size=None, align_steps=None, state=None):
        counts = dict(batch_size=batch_size, seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer, rank=rank,
                      world_size=world_size, inputs_length=inputs_length, prefetch=prefetch, epochs=epochs,
                      vocab_size=vocab_size, align_steps=align_steps)
        for name, value in counts.items():
            # Named here: the extension's "can't convert negative int to unsigned" named none.
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise _native.ConveyorError(f"{name}={value}: give a count of 0 or more")
        if pad_to not in ("feature", "longest"):
            raise _native.ConveyorError(f"pad_to must be 'feature' or 'longest', not {pad_to!r}")
        if (rank is None) != (world_size is None):
            # One from the caller and one from torchrun's environment would shard silently
            # (rank=0 under WORLD_SIZE=4 read a quarter of an evaluation set).
            raise _native.ConveyorError(
                "give both rank and world_size, or neither (torchrun's RANK and WORLD_SIZE, "
                "or one process); rank=0, world_size=1 reads everything")
        if rank is None:
            rank, world_size = _ranks_from_environment()
        self._epochs = epochs
        self._batch_size = batch_size
        self._native = _native.Loader(
            os.fspath(path), batch_size, seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer,
            shuffle_shards=shuffle_shards, rank=rank, world_size=world_size,
            inputs_length=inputs_length, noise_density=noise_density,
            mean_span_length=mean_span_length, pack=pack, pad_to_longest=pad_to == "longest",
            drop_remainder=drop_remainder, prefetch=prefetch, epochs=epochs, vocab_size=vocab_size,
            align_steps=align_steps, state=None if state is None else dict(state),
        )
        self._pid = os.getpid()

    def __iter__(self):
        self._check_process()
        return self

    def _check_process(self):
        # The producer thread does not survive a fork: a DataLoader worker would repeat the
        # prefetched batches and then wait forever.
        worker = None
        if _Base is not object:
            from torch.utils.data import get_worker_info

            worker = get_worker_info()
        if os.getpid() != self._pid or worker is not None:
            raise _native.ConveyorError(
                "a conveyor.Loader cannot be iterated in another process (a DataLoader worker): "
                "use DataLoader(loader, batch_size=None, num_workers=0); it prefetches on its own threads"
            )

    def __next__(self):
        if os.getpid() != self._pid:
            self._check_process()
        batch = self._native.next_batch()
        if batch is None:
            raise StopIteration
        return batch

    def state_dict(self):
        """Where the loader stands after the last batch handed out: {epoch, position,
        fingerprint, ending} (and padding inside an aligned epoch's last step); JSON-able."""
        self._check_process()
        return self._native.state_dict()

    def load_state_dict(self, state):
        """Continues right after the batch `state` was taken at; a state from another
        configuration (data, seed, shuffle, ranks, batch size or packing) is refused."""
        self._check_process()
        self._native.load_state_dict(dict(state))

    def batches_per_epoch(self):
        """Batches per epoch for this rank (example shards read as written; with
        ``align_steps`` the same on every rank, empty batches included), or None when not
        known before reading (token shards, or packing by the loader)."""
        return self._native.batches_per_epoch()

    def __len__(self):
        """The batches this loader will still hand out (what a DataLoader, tqdm or a
        schedule sized by ``len()`` expects): known for example shards with ``epochs``."""
        n = self._native.batches_per_epoch()
        if n is None:
            raise TypeError("the number of batches is not known before reading (token shards, or packing)")
        if self._epochs is None:
            raise TypeError(
                "epochs=None runs until stopped: no length; batches_per_epoch() gives an epoch's")
        s = self._native.state_dict()
        # Batches of this epoch handed out: full ones of the items read, then empty ones.
        done = min(n, -(-s["position"] // self._batch_size) + s.get("padding", 0))
        return max(0, n * (self._epochs - s["epoch"]) - done)

    def __reduce__(self):
        # Pickled (a DataLoader worker under spawn or forkserver, copy.deepcopy): refused
        # with the way out, not "cannot pickle 'conveyor._native.Loader' object".
        raise _native.ConveyorError(
            "a conveyor.Loader cannot be pickled or copied (a DataLoader worker under spawn or "
            "forkserver, copy.deepcopy): use DataLoader(loader, batch_size=None, num_workers=0); "
            "it prefetches on its own threads")
