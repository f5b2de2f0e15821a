"""Audio of short units already synthesised, per voice: a reply's first unit is one or two
words on its own ("Sure,", "I", "The"), and the same few open most answers. Kokoro is
deterministic, so a hit is exactly the audio a new run would make, with none of a run's
fixed cost (about 0.5 s on a CPU) in front of the first audio."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np


class UnitKey(NamedTuple):
    voice: str
    speed: float
    language: str
    words: str  # normalised, as the engine is given them


class UnitCache:
    """A least-recently-used map from unit to audio, bounded in bytes, for units of at
    most `max_words` words (longer ones rarely come again). Thread-safe: the warmer
    fills it from its own thread."""

    def __init__(self, max_bytes: int, max_words: int) -> None:
        self.max_bytes = max_bytes
        self.max_words = max_words
        self._items: OrderedDict[UnitKey, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def holds(self, key: UnitKey) -> bool:
        """Whether this unit is one the cache keeps (it is on, and the unit is short)."""
        return self.max_bytes > 0 and len(key.words.split()) <= self.max_words

    def get(self, key: UnitKey) -> np.ndarray | None:
        if not self.holds(key):
            return None
        with self._lock:
            audio = self._items.get(key)
            if audio is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return audio

    def put(self, key: UnitKey, audio: np.ndarray) -> None:
        if not self.holds(key) or audio.nbytes > self.max_bytes:
            return
        audio = audio.copy()
        audio.flags.writeable = False  # shared by every stream that hits it
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = audio
            self._bytes += audio.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
