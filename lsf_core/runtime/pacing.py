"""Paced output: each face frame is released at its stamp + a delay, not when the engine happens to finish it.

The engine finishes frames in bursts: every frame an audio chunk completes comes out together, so with
100 ms chunks the frames' latency (published minus stamp) spreads over 100 ms, and whatever shows them on
receipt (a robot face, RViz, a speaker that plays the sound at a fixed delay) is out of step by that much.
``FramePacer`` holds each frame until ``stamp + delay`` on the caller's clock and then hands it on, so
every frame's latency is the same ``delay`` and the face keeps the audio's timing.

``delay`` > 0: that many seconds. ``delay`` < 0 (auto): the 95th percentile of how late frames are ready
(ready minus stamp) over the last ``window`` frames, plus ``margin``; raised at once when frames come
later, lowered only when the percentile falls more than ``hysteresis`` below it, so the delay settles
instead of jittering. A frame ready after its release time goes out at once and is counted (``late``).
Frames always go out in the order they came; a frame stamped more than ``MAX_AHEAD`` s beyond its
release (a source clock ahead of ours) goes out at once rather than being held.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

MAX_AHEAD = 1.0     # s: a frame never waits longer than delay + this
LATE = 0.005        # s past its release time at which a frame counts as late


class PaceQueue:
    """The pacing policy without a thread: frames in, and at any time ``now`` the frames due then."""

    def __init__(self, delay: float = -1.0, margin: float = 0.01, window: int = 90, hysteresis: float = 0.005):
        if window < 1:
            raise ValueError(f"window must be at least 1 frame, got {window}")
        self.fixed = delay if delay > 0 else None
        self.margin, self.hysteresis = margin, hysteresis
        self.delay = self.fixed if self.fixed is not None else margin
        self._ready: deque[float] = deque(maxlen=window)
        self._held: deque = deque()
        self.counts = {"frames": 0, "late": 0}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, frames: list, now: float) -> None:
        """Frames finished at ``now`` (in stamp order)."""
        for f in frames:
            self._ready.append(now - f.stamp)
        if self.fixed is None and frames:
            ready = sorted(self._ready)
            wanted = max(ready[min(len(ready) - 1, int(0.95 * len(ready)))] + self.margin, 0.0)
            if wanted > self.delay or wanted < self.delay - self.hysteresis:
                self.delay = wanted
        self._held.extend(frames)

    def take_due(self, now: float) -> tuple[list, float | None]:
        """The frames to hand on at ``now``, in order, and the seconds until the next one is due (None: none
        held)."""
        due = []
        while self._held:
            release = self._held[0].stamp + self.delay
            # a stamp further ahead than the delay (a clock ahead of ours) cannot be honoured: go now
            if now < release <= now + self.delay + MAX_AHEAD:
                self.counts["frames"] += len(due)
                return due, release - now
            due.append(self._held.popleft())
            self.counts["late"] += release < now - LATE
        self.counts["frames"] += len(due)
        return due, None

    def take_all(self) -> list:
        rest = list(self._held)
        self._held.clear()
        return rest


class FramePacer:
    """``PaceQueue`` on its own thread: ``submit`` from the engine's thread, ``publish`` called at release
    times on the pacer's thread, ``clock`` the caller's time in seconds (the stamps' clock)."""

    def __init__(self, publish: Callable[[list], None], clock: Callable[[], float], delay: float = -1.0):
        self._publish, self._clock = publish, clock
        self.queue = PaceQueue(delay)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="lsf-pacer", daemon=True)
        self._thread.start()

    @property
    def delay(self) -> float:
        return self.queue.delay

    @property
    def counts(self) -> dict[str, int]:
        return self.queue.counts

    def submit(self, frames: list) -> None:
        """Frames just finished (in stamp order); they go out at stamp + delay."""
        if frames:
            with self._cond:
                self.queue.add(frames, self._clock())
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self.queue:
                    self._cond.wait()
                if self._stop:
                    return
                due, wait = self.queue.take_due(self._clock())
                if not due:
                    self._cond.wait(timeout=min(wait, 0.05))
                    continue
            self._publish(due)

    def pending(self) -> int:
        """Frames held, not yet released."""
        with self._cond:
            return len(self.queue)

    def close(self, release: bool = True) -> None:
        """Stop the thread; ``release``: hand on what is still held first (end of a stream)."""
        with self._cond:
            self._stop = True
            rest = self.queue.take_all() if release else []
            self._cond.notify()
        self._thread.join(timeout=5.0)
        if rest:
            self._publish(rest)
