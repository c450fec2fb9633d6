"""A queue and one worker thread between audio arrival and the streaming engine.

Audio arrives on one thread (a ROS callback, a sound card) and must never wait for inference; the
engine must never run on two threads at once. ``AnimationWorker.submit`` queues a chunk (bounded to
``max_queue`` seconds: the oldest audio is dropped and counted, in chunks and seconds; the newest chunk is always
kept whole, however long); the worker thread animates the queue in
order and hands the frames to ``publish``; after ``flush_after`` s without audio it flushes the frames
the look-ahead still holds. No error ends the worker: bad audio is counted, anything else is counted,
reported and the stream restarted. ``lock`` guards the animator against changes from other threads
(``with worker.lock: animator.set_rate(...)``).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from lsf_core.audio import AudioError


class AnimationWorker:
    def __init__(self, animator, publish: Callable[[list], None], max_queue: float, flush_after: float,
                 on_bad: Callable[[str, Exception], None], on_error: Callable[[Exception], None]):
        self.animator = animator
        self.max_queue, self.flush_after = max_queue, flush_after
        self._publish, self._on_bad, self._on_error = publish, on_bad, on_error
        self.lock = threading.Lock()            # guards the animator (worker vs. parameter changes)
        self._cond = threading.Condition()
        self._queue: deque[tuple[np.ndarray, int, float, bool, float]] = deque()
        self.queued_s = 0.0
        self.counts = {"chunks": 0, "samples": 0, "dropped_chunks": 0, "dropped_s": 0.0, "errors": 0}
        self.processing_ms: deque[float] = deque(maxlen=1000)  # chunk received -> its frames published
        self._stop = False
        self._last_audio = 0.0
        self._pending_flush = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="lsf-animator", daemon=True)
        self._thread.start()

    def submit(self, samples: np.ndarray, sample_rate: int, stamp: float, received: float | None = None,
               restart: bool = False) -> None:
        """Queue one chunk captured at ``stamp``; ``received`` (monotonic s) times the processing; ``restart``: a new
        time line starts at this chunk (``StreamingAnimator.push``)."""
        n = samples.shape[0]
        with self._cond:
            self._queue.append((samples, sample_rate, stamp, restart,
                                time.monotonic() if received is None else received))
            self.queued_s += n / sample_rate
            while self.queued_s > self.max_queue and len(self._queue) > 1:
                old = self._queue.popleft()
                if old[3]:   # the new time line starts at the chunk that is now the oldest
                    self._queue[0] = (*self._queue[0][:3], True, self._queue[0][4])
                self.queued_s -= old[0].shape[0] / old[1]
                self.counts["dropped_chunks"] += 1
                self.counts["dropped_s"] += old[0].shape[0] / old[1]
            self.counts["chunks"] += 1
            self.counts["samples"] += n
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    self._cond.wait(timeout=0.05)
                if self._stop:
                    return
                item = self._queue.popleft() if self._queue else None
                if item is not None:
                    self.queued_s -= item[0].shape[0] / item[1]
                    self._busy = True
            if item is not None:
                self._last_audio, self._pending_flush = time.monotonic(), True
                frames = self._guarded(self.animator.push, *item[:4])
                self._publish(frames)
                if frames:
                    self.processing_ms.append(1000.0 * (time.monotonic() - item[4]))
                self._busy = False
            elif self._pending_flush and time.monotonic() - self._last_audio > self.flush_after:
                self._publish(self._guarded(self.animator.flush))
                self._pending_flush = False

    def _guarded(self, step, *args) -> list:
        """Run one animator step; no error may end the worker (the face would freeze)."""
        try:
            with self.lock:
                return step(*args)
        except AudioError as err:
            self._on_bad("audio chunk", err)
        except Exception as err:  # noqa: BLE001 - keep animating whatever went wrong
            self.counts["errors"] += 1
            self._on_error(err)
            with self.lock:
                self.animator.reset()
        return []

    def idle(self) -> bool:
        """True when every submitted chunk has been animated and the look-ahead tail flushed."""
        with self._cond:
            return not self._queue and not self._pending_flush and not self._busy

    def request_stop(self) -> None:
        """Stop after the current step (callable from ``publish``, on the worker thread)."""
        self._stop = True

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5.0)
