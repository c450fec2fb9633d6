"""Speech cues for the liveliness layer, from the audio the engine already has: per 40 ms model frame its
loudness (RMS dBFS) and pitch (f0, 0 when unvoiced); per tick, whether the talker speaks, where phrases
start and pauses begin, pitch accents on stressed syllables (a loud, voiced syllable nucleus whose pitch
or loudness stands out from the talker's running range), and a smoothed pitch level.

``FrameFeatures`` belongs to one stream (it restarts with the engine's clock); ``CueTracker`` keeps the
talker's running statistics across streams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lsf_core.audio import pitch_track
from lsf_core.models.base import SAMPLES_PER_FRAME

_CONTEXT = SAMPLES_PER_FRAME // 2   # pitch of a frame: its 40 ms plus the 20 ms before it


class FrameFeatures:
    """Loudness and pitch of every complete 40 ms of one stream's model-rate audio, by model frame index."""

    def __init__(self) -> None:
        self._db: dict[int, float] = {}
        self._f0: dict[int, float] = {}
        self._buf = np.zeros(_CONTEXT, np.float32)   # leading context of the next frame, then its samples
        self._next = 0

    def add_audio(self, chunk: np.ndarray) -> None:
        buf = np.concatenate([self._buf, np.asarray(chunk, np.float32)])
        while buf.size >= _CONTEXT + SAMPLES_PER_FRAME:
            window = buf[: _CONTEXT + SAMPLES_PER_FRAME]
            frame = window[_CONTEXT:]
            self._db[self._next] = float(10.0 * np.log10(np.mean(frame.astype(np.float64) ** 2) + 1e-12))
            f0 = pitch_track(window)
            voiced = f0[f0 > 0]
            self._f0[self._next] = float(np.median(voiced)) if voiced.size >= 2 else 0.0
            self._next += 1
            buf = buf[SAMPLES_PER_FRAME:]
        self._buf = buf

    def get(self, k: int) -> tuple[float, float] | None:
        """(dB, f0 Hz) of model frame ``k``, or None when its audio has not arrived."""
        if k not in self._db:
            return None
        return self._db[k], self._f0[k]

    def forget_before(self, k: int) -> None:
        for j in [j for j in self._db if j < k]:
            del self._db[j], self._f0[j]


@dataclass
class Cues:
    speaking: bool = False
    phrase_start: bool = False   # speech begins at this tick (after a pause)
    pause_start: bool = False    # a pause began (speech has been silent for ``pause_after``)
    accent: float = 0.0          # strength of a pitch accent / stressed syllable at this tick (0 = none, ~1 typical)
    pitch: float = 0.0           # smoothed f0 level in talker z-scores while voiced, decaying to 0 otherwise
    level: float = 0.0           # smoothed loudness above the speech threshold, 0..1


class CueTracker:
    """Per-tick cues from frame features. ``look`` frames of look-ahead are used to see speech coming."""

    def __init__(self, speech_db: float, look: int, pause_after: float = 0.16, tick: float = 0.04):
        self.speech_db, self.look, self.tick = speech_db, max(1, look), tick
        self.pause_frames = max(1, round(pause_after / tick))
        self.reset()

    def reset(self) -> None:
        self._speaking = False
        self._silent_ticks = 0
        self._mu, self._var, self._n = math.log(150.0), 0.04, 0   # running log-f0 statistics of the talker
        self._db_mean = self.speech_db + 20.0                     # running loudness of voiced speech
        self._pitch = 0.0
        self._level = 0.0
        self._since_accent = 99.0
        self._recent_db: list[float] = []

    def step(self, features: FrameFeatures, k: int) -> Cues:
        """Cues at model frame ``k`` of the current stream (missing audio counts as silence)."""
        frames = [features.get(j) for j in range(k, k + self.look)]
        loud = [f is not None and f[0] > self.speech_db for f in frames]
        now = features.get(k)
        db, f0 = now if now is not None else (-120.0, 0.0)
        cues = Cues()
        if any(loud):
            cues.phrase_start = not self._speaking
            self._speaking, self._silent_ticks = True, 0
        elif self._speaking:
            self._silent_ticks += 1
            if self._silent_ticks >= self.pause_frames:
                self._speaking, cues.pause_start = False, True
        cues.speaking = self._speaking
        self._since_accent += self.tick
        z = 0.0
        if f0 > 0 and db > self.speech_db:
            lf = math.log(f0)
            sd = math.sqrt(self._var)
            z = max(-3.0, min(3.0, (lf - self._mu) / sd))
            a = 1.0 / min(self._n + 2, 60)     # about 2.4 s of voiced speech once warmed up
            self._mu += a * (lf - self._mu)
            self._var = max(0.003, self._var + a * ((lf - self._mu) ** 2 - self._var))
            self._n += 1
            self._db_mean += 0.03 * (db - self._db_mean)
            self._pitch += 0.25 * (z - self._pitch)
        else:
            self._pitch *= 0.9
        cues.pitch = self._pitch
        self._level += 0.3 * (min(1.0, max(0.0, (db - self.speech_db) / 30.0)) - self._level)
        cues.level = self._level
        # a stressed syllable: a voiced loudness peak (vs the neighbouring frames) that stands out from the
        # talker's level or pitch range
        nxt = features.get(k + 1)
        self._recent_db = (self._recent_db + [db])[-5:]
        rise = db - min(self._recent_db)
        peak = nxt is None or db >= nxt[0]
        if f0 > 0 and db > self.speech_db and peak and rise > 3.0 and db >= max(self._recent_db) \
                and self._since_accent > 0.25:
            prominence = 0.5 * (db - self._db_mean) / 6.0 + 0.5 * z + 0.15 * (rise - 3.0) / 3.0
            if prominence > 0.15:
                cues.accent = min(2.0, 0.5 + prominence)
                self._since_accent = 0.0
        return cues
