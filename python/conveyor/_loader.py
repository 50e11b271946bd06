"""conveyor.Loader: the Python face of conveyor's streaming loader."""

import os

from . import _native

try:  # A torch IterableDataset when torch is installed, so DataLoader(loader, batch_size=None) works.
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - JAX or plain numpy users
    _Base = object


def _env_int(name, default):
    value = os.environ.get(name)
    return default if value is None else int(value)


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
    an epoch's batches whatever has been read. ``vocab_size`` (the model's) turns an id
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

    def __init__(self, path, batch_size, *, seed=0, epoch=0, shuffle_buffer=10000, rank=None,
                 world_size=None, inputs_length=None, noise_density=None, mean_span_length=None,
                 pack=False, pad_to="feature", drop_remainder=False, prefetch=2, epochs=None,
                 vocab_size=None, align_steps=None, state=None):
        if pad_to not in ("feature", "longest"):
            raise _native.ConveyorError(f"pad_to must be 'feature' or 'longest', not {pad_to!r}")
        if (rank is None) != (world_size is None):
            # One from the caller and one from torchrun's environment would shard silently
            # (rank=0 under WORLD_SIZE=4 read a quarter of an evaluation set).
            raise _native.ConveyorError(
                "give both rank and world_size, or neither (torchrun's RANK and WORLD_SIZE, "
                "or one process); rank=0, world_size=1 reads everything")
        self._native = _native.Loader(
            os.fspath(path), batch_size, seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer,
            rank=_env_int("RANK", 0) if rank is None else rank,
            world_size=_env_int("WORLD_SIZE", 1) if world_size is None else world_size,
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
        fingerprint}; JSON-able."""
        return self._native.state_dict()

    def load_state_dict(self, state):
        """Continues right after the batch `state` was taken at; a state from another
        configuration (data, seed, shuffle, ranks, batch size or packing) is refused."""
        self._native.load_state_dict(dict(state))

    def __len__(self):
        n = self._native.batches_per_epoch()
        if n is None:
            raise TypeError("the number of batches is not known before reading (token shards, or packing)")
        return n
