"""Spontaneous blinks with human timing (figures and sources in ``docs/liveliness.md``).

A renewal process whose clock runs at the current rate: after each blink the next one is due when
``Gamma(shape, 1/shape)`` expected blinks have elapsed at ``rate_speaking`` or ``rate_silent`` per minute,
so inter-blink intervals are right-skewed with a refractory start, and the rate follows the talker's state.
A pause in speech brings a blink that is more than ``pause_due`` of the way to due forward, with
probability ``at_pause`` (speakers blink at pauses and phrase ends). A blink closes in ``close`` s
(accelerating), may stay shut briefly, and reopens more slowly in ``open`` s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BlinkConfig:
    rate_speaking: float = 18.0      # blinks per minute while speaking
    rate_silent: float = 15.0        # blinks per minute in silence
    interval_shape: float = 3.0      # gamma shape of the inter-blink interval (in expected blinks)
    min_interval: float = 0.5        # s: no blink sooner than this after the previous one
    at_pause: float = 0.6            # probability that a pause brings a nearly-due blink forward
    pause_due: float = 0.4           # ... when at least this fraction of the interval has passed
    close: tuple[float, float] = (0.10, 0.15)   # s, closing phase (uniform range)
    hold: tuple[float, float] = (0.0, 0.03)     # s, fully closed
    open: tuple[float, float] = (0.15, 0.25)    # s, opening phase
    amplitude: tuple[float, float] = (0.9, 1.0)  # peak eyeBlink weight


def _smooth(s: np.ndarray | float) -> np.ndarray | float:
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


@dataclass
class Blink:
    onset: float
    close: float
    hold: float
    open: float
    amplitude: float
    at_pause: bool = False

    @property
    def end(self) -> float:
        return self.onset + self.close + self.hold + self.open

    def value(self, t: float) -> float:
        dt = t - self.onset
        if dt <= 0.0 or t >= self.end:
            return 0.0
        if dt < self.close:
            return self.amplitude * float(_smooth(dt / self.close))
        dt -= self.close + self.hold
        if dt <= 0.0:
            return self.amplitude
        return self.amplitude * (1.0 - float(_smooth(dt / self.open)))


class BlinkScheduler:
    def __init__(self, config: BlinkConfig, rng: np.random.Generator):
        self.config, self.rng = config, rng
        c = config
        self._interval = rng.gamma(c.interval_shape, 1.0 / c.interval_shape)
        self._left = self._interval * rng.uniform(0.0, 1.0)   # start at a random phase of the first interval
        self._last = -1e9
        self.blinks: list[Blink] = []

    def tick(self, t: float, dt: float, speaking: bool, pause_start: bool) -> Blink | None:
        """Advance to tick time ``t``; return the blink that starts in this tick, if any."""
        c = self.config
        self._left -= (c.rate_speaking if speaking else c.rate_silent) / 60.0 * dt
        self.blinks = [b for b in self.blinks if b.end > t - 1.0]
        if t - self._last < c.min_interval:
            return None
        at_pause = (pause_start and self._left < (1.0 - c.pause_due) * self._interval
                    and self.rng.random() < c.at_pause)
        if self._left > 0.0 and not at_pause:
            return None
        rng = self.rng
        blink = Blink(t + (0.0 if at_pause else rng.uniform(0.0, dt)), rng.uniform(*c.close), rng.uniform(*c.hold),
                      rng.uniform(*c.open), rng.uniform(*c.amplitude), at_pause)
        self.blinks.append(blink)
        self._last = blink.onset
        self._interval = rng.gamma(c.interval_shape, 1.0 / c.interval_shape)
        self._left = self._interval
        return blink

    def value(self, t: float) -> float:
        return max((b.value(t) for b in self.blinks), default=0.0)
