"""Capture stamps for audio that arrives without them (std_msgs arrays, ros-drivers AudioData, sound cards)."""
from __future__ import annotations


class ChunkClock:
    """Capture stamps for messages that carry none (std_msgs arrays, ros-drivers AudioData).

    The first chunk is anchored at its arrival time (the animator passes the DDS publish time, so a busy
    receiver does not shift it) minus its duration; after that the sample count
    keeps the clock, so stamps are contiguous and jitter-free. When chunks arrive more than
    ``resync`` seconds later than the count predicts (the source paused), the clock re-anchors.
    """

    def __init__(self, resync: float = 0.25):
        self.resync = resync
        self._next: float | None = None
        self._rate = 0

    def reset(self) -> None:
        self._next = None

    def stamp(self, frames: int, rate: int, now: float) -> float:
        duration = frames / rate
        estimate = now - duration
        if self._next is None or rate != self._rate or estimate - self._next > self.resync:
            self._next, self._rate = estimate, rate
        stamp = self._next
        self._next += duration
        return stamp
