"""Voice activity from frame energy: the face relaxes towards neutral in silence and opens at once on speech."""
from __future__ import annotations

import math

import numpy as np

from lsf_core.models.base import SAMPLES_PER_FRAME


class VoiceGate:
    """A gain in [0, 1] per output frame: 1 while any audio frame from the output frame's model frame up to its
    look-ahead is louder than ``threshold_db`` (RMS dBFS of 40 ms); after ``hangover`` s of silence it decays
    with a time constant of ``relax_time / 3``."""

    def __init__(self, threshold_db: float, hangover: float, relax_time: float):
        self.threshold_db, self.hangover, self.relax_time = threshold_db, hangover, relax_time
        self._gate = 1.0                        # 1 = speaking, 0 = relaxed
        self._silent_for = 0.0
        self._audio_db: dict[int, float] = {}   # RMS dBFS of each 40 ms of audio, by model frame index
        self._buf = np.zeros(0, np.float32)
        self._next = 0

    def add_audio(self, chunk: np.ndarray) -> None:
        """Model-rate audio, contiguous with the previous call: the loudness of every complete 40 ms."""
        buf = np.concatenate([self._buf, chunk])
        n = buf.size // SAMPLES_PER_FRAME
        if n:
            rms = np.sqrt(np.mean(buf[: n * SAMPLES_PER_FRAME].reshape(n, -1) ** 2, axis=1) + 1e-12)
            for db in 20.0 * np.log10(rms):
                self._audio_db[self._next] = float(db)
                self._next += 1
        self._buf = buf[n * SAMPLES_PER_FRAME:]

    def forget_before(self, k: int) -> None:
        for j in [j for j in self._audio_db if j < k]:
            del self._audio_db[j]

    def update(self, k: int, look: int, dt: float) -> float:
        """The gain for an output frame in model frame ``k``, ``dt`` s after the previous output frame."""
        window = [self._audio_db[j] for j in range(k, k + 1 + look) if j in self._audio_db]
        if window and max(window) > self.threshold_db:
            self._silent_for, self._gate = 0.0, 1.0
        else:
            self._silent_for += dt
            if self._silent_for > self.hangover:
                self._gate *= math.exp(-dt / (self.relax_time / 3.0))
        return self._gate
