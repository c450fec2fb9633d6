"""Where the eyes look: fixations joined by saccades on the main sequence, conversational gaze aversion, and a
gaze target that the eyes lead and the head follows (figures and sources in ``docs/liveliness.md``).

Gaze directions are (yaw, pitch) in degrees in the head's rest frame (yaw > 0 to the face's left, pitch > 0
down); straight ahead (0, 0) is the listener. Natural gaze alternates between looking at the listener
(small scanning saccades around the face) and looking away; a phrase start often turns the gaze away
and a pause often brings it back (Kendon 1967). A saccade of amplitude A degrees lasts
``duration_ms_per_deg * A + duration_ms_min`` ms and peaks at ``v_max * (1 - exp(-A / v_scale))`` deg/s.
With a target the gaze follows it (saccades when it jumps, pursuit when it glides) and asks the head to
take ``head_share`` of the angle; the eyes take the rest (eye-in-head = gaze - head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GazeConfig:
    duration_ms_per_deg: float = 2.2    # saccade main sequence: duration = 2.2 ms/deg * A + 21 ms
    duration_ms_min: float = 21.0
    v_max: float = 600.0                # deg/s: peak velocity saturates at this
    v_scale: float = 9.0                # deg: ... with this amplitude constant
    at_listener_speaking: float = 1.6   # s, median dwell looking at the listener while speaking
    away_speaking: float = 1.8          # s, median dwell looking away while speaking
    at_listener_silent: float = 4.0     # s, ... while listening / idle
    away_silent: float = 1.0
    avert_at_phrase_start: float = 0.7  # probability of looking away as a phrase starts
    return_at_pause: float = 0.7        # probability of looking back at the listener at a pause
    scan_interval: float = 0.9          # s, median fixation before a small scanning saccade
    scan_amplitude: float = 1.5         # deg, typical scanning saccade around the fixation point
    away_yaw: tuple[float, float] = (5.0, 14.0)     # deg, magnitude of a sideways aversion
    away_pitch: tuple[float, float] = (-9.0, 10.0)  # deg, vertical component of an aversion
    head_share_natural: float = 0.15    # part of a natural gaze shift the head takes
    head_share_target: float = 0.6      # part of a target's direction the head takes
    head_time: float = 0.35             # s, time constant of the head following the gaze
    pursuit_threshold: float = 2.0      # deg: a target further than this from the gaze triggers a saccade
    reaction: float = 0.15              # s, latency of a saccade to a new target
    eye_limits: tuple[float, float] = (30.0, 20.0)             # deg, |yaw|, |pitch| of the eyes in the head
    head_limits: tuple[float, float, float] = (45.0, 25.0, 15.0)  # deg, |yaw|, |pitch|, |roll|


def _profile_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity shapes sin(pi s)^p for a range of p: mean/peak velocity ratio k(p) and normalised positions."""
    s = np.linspace(0.0, 1.0, 129)
    powers = np.linspace(0.25, 3.0, 45)
    vel = np.sin(np.pi * s)[None, :] ** powers[:, None]
    pos = np.concatenate([np.zeros((len(powers), 1)), np.cumsum((vel[:, 1:] + vel[:, :-1]) / 2, axis=1)], axis=1)
    k = pos[:, -1] / (len(s) - 1) / vel.max(axis=1)
    return k, pos / pos[:, -1:], s


_K, _POS, _S = _profile_table()


@dataclass
class Saccade:
    """One saccade from ``start`` to ``goal`` (deg) beginning at ``onset`` (s)."""
    onset: float
    start: np.ndarray
    goal: np.ndarray
    config: GazeConfig
    duration: float = 0.0
    peak_velocity: float = 0.0
    _shape: np.ndarray = field(default=None, repr=False)

    def __post_init__(self) -> None:
        c = self.config
        a = float(np.linalg.norm(self.goal - self.start))
        self.amplitude = a
        self.duration = (c.duration_ms_per_deg * a + c.duration_ms_min) / 1000.0
        self.peak_velocity = c.v_max * (1.0 - math.exp(-a / c.v_scale)) if a > 0 else 0.0
        k = a / (self.peak_velocity * self.duration) if a > 0 else _K[len(_K) // 2]
        i = int(np.argmin(np.abs(_K - k)))   # the velocity shape whose mean/peak ratio fits both laws
        self._shape = _POS[i]

    @property
    def end(self) -> float:
        return self.onset + self.duration

    def position(self, t: float) -> np.ndarray:
        s = min(1.0, max(0.0, (t - self.onset) / self.duration))
        return self.start + (self.goal - self.start) * float(np.interp(s, _S, self._shape))


def direction(vector: np.ndarray) -> np.ndarray:
    """(yaw, pitch) degrees of a direction in the face frame (x left, y up, z forward)."""
    x, y, z = (float(v) for v in vector)
    return np.array([math.degrees(math.atan2(x, z)), math.degrees(math.atan2(-y, math.hypot(x, z)))])


class GazeController:
    def __init__(self, config: GazeConfig, rng: np.random.Generator):
        self.config, self.rng = config, rng
        self._gaze = np.zeros(2)           # where the current/last saccade ends
        self._saccade: Saccade | None = None
        self._away = False
        self._fixation = np.zeros(2)       # centre of the current state's fixations
        self._next_switch = self._dwell(False, False)
        self._next_scan = self._lognormal(self.config.scan_interval)
        self._target: np.ndarray | None = None
        self._target_since = 0.0
        self._head_goal = np.zeros(2)
        self.saccades: list[Saccade] = []   # recent saccades (for tests and evaluation), bounded

    # ---- timing draws -------------------------------------------------------------------------------
    def _lognormal(self, median: float, sigma: float = 0.5) -> float:
        return float(median * math.exp(sigma * self.rng.standard_normal()))

    def _dwell(self, away: bool, speaking: bool) -> float:
        c = self.config
        if speaking:
            return self._lognormal(c.away_speaking if away else c.at_listener_speaking)
        return self._lognormal(c.away_silent if away else c.at_listener_silent)

    # ---- target -------------------------------------------------------------------------------------
    def set_target(self, gaze: np.ndarray | None, t: float) -> None:
        """Look at ``gaze`` (yaw, pitch) degrees in the head's rest frame, or None to return to natural gaze."""
        if gaze is None:
            if self._target is not None:
                self._target = None
                self._next_switch = t
            return
        if self._target is None:
            self._target_since = t
        self._target = np.asarray(gaze, np.float64)

    @property
    def has_target(self) -> bool:
        return self._target is not None

    # ---- ticks --------------------------------------------------------------------------------------
    def _saccade_to(self, goal: np.ndarray, onset: float) -> None:
        start = self.position(onset)
        sac = Saccade(onset, start, np.asarray(goal, np.float64), self.config)
        self._saccade, self._gaze = sac, sac.goal.copy()
        self.saccades = (self.saccades + [sac])[-200:]

    def _new_fixation(self, away: bool) -> np.ndarray:
        c, rng = self.config, self.rng
        if away:
            yaw = rng.uniform(*c.away_yaw) * (1 if rng.random() < 0.5 else -1)
            return np.array([yaw, rng.uniform(*c.away_pitch)])
        return np.array([rng.normal(0.0, 1.0), rng.normal(0.8, 0.8)])   # the listener's eyes and mouth

    def tick(self, t: float, dt: float, speaking: bool, phrase_start: bool, pause_start: bool) -> None:
        c, rng = self.config, self.rng
        if self._target is not None:
            err = float(np.linalg.norm(self._target - self.position(t)))
            busy = self._saccade is not None and t < self._saccade.end
            if err > c.pursuit_threshold and not busy and t - self._target_since >= c.reaction:
                self._saccade_to(self._target, t + rng.uniform(0.0, dt))
            elif not busy and err <= c.pursuit_threshold:
                self._gaze = self._target.copy()      # smooth pursuit: the fixation glides with the target
                self._saccade = None
            if t - self._target_since >= c.reaction:   # the head starts with the eyes' saccade, then lags
                self._head_goal = c.head_share_target * self._target
            return
        avert = phrase_start and not self._away and rng.random() < c.avert_at_phrase_start
        look_back = pause_start and self._away and rng.random() < c.return_at_pause
        switch = t >= self._next_switch or avert or look_back
        if switch:
            self._away = not self._away
            self._fixation = self._new_fixation(self._away)
            self._next_switch = t + self._dwell(self._away, speaking)
            self._next_scan = t + self._lognormal(c.scan_interval)
            self._saccade_to(self._fixation, t + rng.uniform(0.0, dt))
        elif t >= self._next_scan:
            step = rng.normal(0.0, c.scan_amplitude / math.sqrt(2), 2)
            goal = self._fixation + np.clip(step, -3 * c.scan_amplitude, 3 * c.scan_amplitude)
            self._next_scan = t + self._lognormal(c.scan_interval)
            self._saccade_to(goal, t + rng.uniform(0.0, dt))
        self._head_goal = c.head_share_natural * self._fixation

    def position(self, t: float) -> np.ndarray:
        """Gaze direction (yaw, pitch) degrees at time ``t`` in the head's rest frame."""
        if self._saccade is not None and t < self._saccade.end:
            return self._saccade.position(t)
        return self._gaze.copy()

    @property
    def head_goal(self) -> np.ndarray:
        """(yaw, pitch) degrees the head should turn towards to support the gaze."""
        return self._head_goal.copy()
