"""Capture stamps for audio that arrives without them (std_msgs arrays, ros-drivers AudioData, sound cards)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

DRIFT_SLACK = 0.1    # s: a count off by less than this from the least delayed arrival is left alone (jitter)
DRIFT_WINDOW = 2.0   # s of audio over which the least delayed arrival is looked for
WINDOW_ERRORS = 2048  # errors kept per window at most (1-sample messages would otherwise keep 32000)


class ChunkClock:
    """Capture stamps for messages that carry none (std_msgs arrays, ros-drivers AudioData).

    The first chunk is anchored at its arrival time (the animator passes the DDS publish time, so a busy
    receiver does not shift it) minus its duration; after that the sample count keeps the clock, so
    stamps are contiguous and jitter-free. A chunk's audio was captured before it was sent, so the count
    is checked against arrival, ``error = arrival - duration - count`` (> 0: later than the count
    predicts, < 0: the count runs ahead of arrival, which no real-time source can do):

    - ``error > resync`` (the source paused, messages were lost): re-anchor at the chunk's arrival ("late");
    - ``error < -resync`` (audio faster than real time, a clock that went backwards): re-anchor ("early");
    - drift, over every ``DRIFT_WINDOW`` s of audio: when even the least delayed chunk (smallest error) is later
      than ``DRIFT_SLACK``, the count moves forward by that much; when most chunks (the median error) are earlier
      than ``-DRIFT_SLACK``, it moves back by the median ("drift"). A sound card whose clock drifts, a late first
      chunk, the tail of a fault shorter than ``resync`` do not shift the stamps for good. Jitter never moves
      the count (it only delays: the least delayed chunk is on time), and neither does the odd chunk that looks
      early because the clock it is dated by lagged (sim time: the /clock message after the audio it dates).

    Every re-anchor calls ``on_jump(kind, seconds)`` (seconds > 0: the time line moved later) and is counted
    in ``jumps``. The same arrivals give the same stamps (the speaker and the animator stamp alike).

    A move back (``early``, or a drift < 0) sets ``moved_back`` for the chunk it stamped. Its audio overlaps the
    time already stamped, but it was never heard before: the caller starts a new stream there
    (``StreamingAnimator.push(..., restart=True)``) rather than trim the overlap, so no audio is lost (a start-up
    stall of the publisher followed by its catch-up burst moves the time line forward, then back); the new
    stream's first frames are then stamped before the old stream's last ones, once, by the correction.
    """

    def __init__(self, resync: float = 0.25, on_jump: Callable[[str, float], None] | None = None):
        self.resync = resync
        self.on_jump = on_jump
        self.jumps = {"late": 0, "early": 0, "drift": 0}
        self.moved_back = False       # the last stamp moved the time line back (start a new stream there)
        self._next: float | None = None
        self._rate = 0
        self._window_s = 0.0          # audio seen since the drift window started
        self._errors: list[float] = []  # the window's errors (decimated beyond WINDOW_ERRORS)

    def reset(self) -> None:
        self._next = None

    def stamp(self, frames: int, rate: int, now: float) -> float:
        duration = frames / rate
        estimate = now - duration
        self.moved_back = False
        if self._next is None or rate != self._rate:
            self._anchor(estimate, rate)
        else:
            error = estimate - self._next
            if abs(error) > self.resync:
                self._jump("late" if error > 0 else "early", error)
                self._anchor(estimate, rate)
            else:
                self._errors.append(error)
                if len(self._errors) >= WINDOW_ERRORS:   # tiny messages: keep memory bounded
                    self._errors = self._errors[::2]
                self._window_s += duration
                if self._window_s >= DRIFT_WINDOW:
                    least, most = min(self._errors), float(np.median(self._errors))
                    shift = least if least > DRIFT_SLACK else most if most < -DRIFT_SLACK else 0.0
                    if shift:
                        self._jump("drift", shift)
                        self._next += shift
                    self._window_s, self._errors = 0.0, []
        stamp = self._next
        self._next += duration
        return stamp

    def _anchor(self, start: float, rate: int) -> None:
        self._next, self._rate = start, rate
        self._window_s, self._errors = 0.0, []

    def _jump(self, kind: str, seconds: float) -> None:
        self.jumps[kind] += 1
        self.moved_back = seconds < 0
        if self.on_jump is not None:
            self.on_jump(kind, seconds)
