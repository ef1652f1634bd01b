"""Where a dataset's iteration stands: :class:`EpochState` (epoch, start, seed, shuffle, window).

The five numbers live in one small int64 tensor in shared memory, so DataLoader workers forked
once (``persistent_workers=True``) see every change the training process makes afterwards
(``set_epoch``, ``load_state_dict``) without being restarted. ``start`` is the number of
samples of the epoch's global order already consumed when the next pass begins (see
:mod:`benchkit.data.plan`); everything else about a pass is derived from these five numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from benchkit.data.plan import DEFAULT_WINDOW

__all__ = ["EpochState"]

_INT63 = (1 << 63) - 1
_FIELDS = ("epoch", "start", "seed", "shuffle", "window")
_EPOCH, _START, _SEED, _SHUFFLE, _WINDOW = range(len(_FIELDS))


class EpochState:
    """The epoch, the start position within it and the shuffle settings, shared with workers."""

    def __init__(
        self, *, seed: int = 0, shuffle: bool = False, window: int = DEFAULT_WINDOW
    ) -> None:
        self._t = torch.zeros(len(_FIELDS), dtype=torch.int64)
        self._t.share_memory_()
        self.seed, self.shuffle, self.window = seed, shuffle, window

    def _get(self, slot: int) -> int:
        return int(self._t[slot])

    def _set(self, slot: int, value: int) -> None:
        self._t[slot] = int(value)

    epoch = property(lambda self: self._get(_EPOCH), lambda self, v: self._set(_EPOCH, v))
    start = property(lambda self: self._get(_START), lambda self, v: self._set(_START, v))
    window = property(lambda self: self._get(_WINDOW), lambda self, v: self._set(_WINDOW, v))

    @property
    def seed(self) -> int:
        return self._get(_SEED)

    @seed.setter
    def seed(self, value: int) -> None:
        self._set(_SEED, int(value) & _INT63)

    @property
    def shuffle(self) -> bool:
        return bool(self._get(_SHUFFLE))

    @shuffle.setter
    def shuffle(self, value: bool) -> None:
        self._set(_SHUFFLE, int(bool(value)))

    def select_epoch(self, epoch: int) -> bool:
        """Go to ``epoch``: from its beginning if it is another epoch; the current one keeps its
        position (so a resumed epoch is not restarted). True if the epoch changed."""
        if int(epoch) == self.epoch:
            return False
        self.epoch, self.start = int(epoch), 0
        return True

    def finish(self, epoch: int, start: int) -> None:
        """A pass of ``epoch`` from ``start`` ran to its end: move on to the next epoch, unless
        someone chose another position meanwhile (``set_epoch``, ``load_state_dict``)."""
        if (self.epoch, self.start) == (epoch, start):
            self.epoch, self.start = epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """The five numbers as plain values."""
        return {
            "epoch": self.epoch,
            "start": self.start,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "window": self.window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set any of the five numbers from :meth:`state_dict` (missing keys stay as they are)."""
        for key in _FIELDS:
            if key in state:
                setattr(self, key, state[key])

    def __repr__(self) -> str:
        return f"EpochState({self.state_dict()})"
