"""Capture stamps for audio that arrives without them (std_msgs arrays, ros-drivers AudioData, sound cards)."""
from __future__ import annotations

from collections.abc import Callable

DRIFT_SLACK = 0.1    # s: a count off by less than this from the least delayed arrival is left alone (jitter)
DRIFT_WINDOW = 2.0   # s of audio over which the least delayed arrival is looked for


class ChunkClock:
    """Capture stamps for messages that carry none (std_msgs arrays, ros-drivers AudioData).

    The first chunk is anchored at its arrival time (the animator passes the DDS publish time, so a busy
    receiver does not shift it) minus its duration; after that the sample count keeps the clock, so
    stamps are contiguous and jitter-free. A chunk's audio was captured before it was sent, so the count
    is checked against arrival, ``error = arrival - duration - count`` (> 0: later than the count
    predicts, < 0: the count runs ahead of arrival, which no real-time source can do):

    - ``error > resync`` (the source paused, messages were lost): re-anchor at the chunk's arrival ("late");
    - ``error < -resync`` (audio faster than real time, a clock that went backwards): re-anchor ("early");
    - drift: over every ``DRIFT_WINDOW`` s of audio the least delayed chunk (smallest error) is found; if it
      is off by more than ``DRIFT_SLACK`` either way, the count moves by that much ("drift"): a sound card
      whose clock drifts, a late first chunk, the tail of a fault shorter than ``resync`` do not shift the
      stamps for good. Jitter never moves the count (the least delayed chunk is on time).

    Every re-anchor calls ``on_jump(kind, seconds)`` (seconds > 0: the time line moved later) and is counted
    in ``jumps``. The same arrivals give the same stamps (the speaker and the animator stamp alike).
    """

    def __init__(self, resync: float = 0.25, on_jump: Callable[[str, float], None] | None = None):
        self.resync = resync
        self.on_jump = on_jump
        self.jumps = {"late": 0, "early": 0, "drift": 0}
        self._next: float | None = None
        self._rate = 0
        self._window_s = 0.0          # audio seen since the drift window started
        self._min_error = float("inf")  # smallest error in the window

    def reset(self) -> None:
        self._next = None

    def stamp(self, frames: int, rate: int, now: float) -> float:
        duration = frames / rate
        estimate = now - duration
        if self._next is None or rate != self._rate:
            self._anchor(estimate, rate)
        else:
            error = estimate - self._next
            if abs(error) > self.resync:
                self._jump("late" if error > 0 else "early", error)
                self._anchor(estimate, rate)
            else:
                self._min_error = min(self._min_error, error)
                self._window_s += duration
                if self._window_s >= DRIFT_WINDOW:
                    shift = self._min_error
                    if abs(shift) > DRIFT_SLACK:
                        self._jump("drift", shift)
                        self._next += shift
                    self._window_s, self._min_error = 0.0, float("inf")
        stamp = self._next
        self._next += duration
        return stamp

    def _anchor(self, start: float, rate: int) -> None:
        self._next, self._rate = start, rate
        self._window_s, self._min_error = 0.0, float("inf")

    def _jump(self, kind: str, seconds: float) -> None:
        self.jumps[kind] += 1
        if self.on_jump is not None:
            self.on_jump(kind, seconds)
