"""Head motion that goes with the speech (figures and sources in ``docs/liveliness.md``): a nod (with a little
turn and tilt) on stressed syllables and pitch accents, the head rising with the voice's pitch, a slow
sway that is fuller while speaking and nearly still in silence. Angles in degrees (yaw, pitch, roll), in
the conventions of ``lsf_core.arkit.POSE_NAMES``; ``scale`` sets the amplitude (1 = the read speech we
measured, about 2-3 = lively conversation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class HeadConfig:
    scale: float = 1.0                    # amplitude of all speech head motion
    nod: tuple[float, float] = (0.5, 1.3)   # deg, nod amplitude per unit accent strength (uniform range)
    nod_time: tuple[float, float] = (0.14, 0.24)  # s, time to the nod's peak
    nod_down: float = 0.8                 # share of nods that go down (the rest go up)
    turn: float = 0.35                    # yaw that goes with a nod, relative to its pitch
    tilt: float = 0.25                    # roll that goes with a nod, relative to its pitch
    pitch_follow: float = 0.35            # deg of head raise per z-score of voice pitch
    sway: tuple[float, float, float] = (0.45, 0.35, 0.25)  # deg, sway amplitude (yaw, pitch, roll) while speaking
    sway_hz: tuple[float, float] = (0.08, 0.35)  # frequency range of the sway components
    still: float = 0.25                   # sway left in silence, relative to speech
    settle: float = 0.8                   # s, time constant of the change between speaking and silence


@dataclass
class Nod:
    onset: float
    time: float                 # s to the peak
    amplitude: np.ndarray       # (3,) deg at the peak

    def value(self, t: float) -> np.ndarray:
        u = (t - self.onset) / self.time
        if u <= 0.0:
            return np.zeros(3)
        return self.amplitude * (u * math.exp(1.0 - u))

    def done(self, t: float) -> bool:
        return t - self.onset > 8.0 * self.time


class Track:
    """A signal sampled at ticks, read between the last two ticks by linear interpolation."""

    def __init__(self, value: float | np.ndarray = 0.0):
        self.t0 = self.t1 = -1e9
        self.v0 = self.v1 = value

    def push(self, t: float, value: float | np.ndarray) -> None:
        self.t0, self.v0, self.t1, self.v1 = self.t1, self.v1, t, value

    @property
    def last(self) -> float | np.ndarray:
        return self.v1

    def at(self, t: float) -> float | np.ndarray:
        if self.t1 <= self.t0 or t >= self.t1:
            return self.v1
        a = max(0.0, (t - self.t0) / (self.t1 - self.t0))
        return self.v0 + a * (self.v1 - self.v0)


class HeadMotion:
    def __init__(self, config: HeadConfig, rng: np.random.Generator):
        self.config, self.rng = config, rng
        lo, hi = config.sway_hz
        self._freq = rng.uniform(lo, hi, (3, 3))          # 3 components per axis
        self._phase = rng.uniform(0.0, 2 * math.pi, (3, 3))
        self._nods: list[Nod] = []
        self._env = Track(config.still)
        self._pitch = Track(0.0)

    def tick(self, t: float, dt: float, speaking: bool, accent: float, pitch: float) -> None:
        c, rng = self.config, self.rng
        target = 1.0 if speaking else c.still
        self._env.push(t, self._env.last + (1.0 - math.exp(-dt / c.settle)) * (target - self._env.last))
        self._pitch.push(t, pitch if speaking else 0.9 * self._pitch.last)
        self._nods = [n for n in self._nods if not n.done(t)]
        if accent > 0.0 and speaking:
            a = rng.uniform(*c.nod) * accent * (1.0 if rng.random() < c.nod_down else -0.6)
            amp = np.array([c.turn * abs(a) * rng.choice((-1.0, 1.0)), a, c.tilt * abs(a) * rng.choice((-1.0, 1.0))])
            self._nods.append(Nod(t + rng.uniform(0.0, dt), rng.uniform(*c.nod_time), amp))

    def angles(self, t: float) -> np.ndarray:
        """(yaw, pitch, roll) degrees of the speech head motion at time ``t``."""
        c = self.config
        sway = (np.sin(2 * math.pi * self._freq * t + self._phase).sum(axis=1) / math.sqrt(3)
                * np.asarray(c.sway) * float(self._env.at(t)))
        nods = sum((n.value(t) for n in self._nods), np.zeros(3))
        follow = np.array([0.0, -c.pitch_follow * float(self._pitch.at(t)), 0.0])
        return c.scale * (sway + nods + follow)
