"""The liveliness layer: what an audio model cannot predict, added after it. Blinks, gaze (eye angles and
the ARKit eyeLook channels), head motion with the speech, brows with prosody and emphasis, and idle motion
(breathing, micro-movements) so the face never freezes. Figures, sources and measurements:
``docs/liveliness.md``.

The streaming engine calls ``add_audio`` with the model-rate audio it feeds the model, and ``frame`` for
every output frame. Decisions are taken at the model's 25 Hz ticks from speech cues (``speech_cues``),
with random draws from one generator per behaviour seeded by ``seed`` and the stream's start stamp: the
same audio, stamps and seed give the same face at any output rate and chunking, and switching one behaviour
off leaves the others' draws unchanged. The engine starts a new stream only after half a second without
audio (no frames went out meanwhile); the gaze target and the head's following of it carry over.

Outputs per frame: additive ARKit weight changes (52, ARKit order) and pose angles (``POSE_NAMES``:
head yaw, pitch, roll, eye yaw, pitch; radians). Head = speech motion + breathing + the part of a gaze
shift the head takes; eyes = gaze - head (the eyes hold their target while the head moves).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.config import load_config
from lsf_core.face.head_pose import parent_to_face
from lsf_core.models.base import FPS
from lsf_core.runtime.blinks import BlinkConfig, BlinkScheduler
from lsf_core.runtime.gaze import GazeConfig, GazeController, direction
from lsf_core.runtime.head_motion import HeadConfig, HeadMotion, Track
from lsf_core.runtime.speech_cues import CueTracker, FrameFeatures

GROUPS = ("blinks", "gaze", "head", "brows", "idle")
TICK = 1.0 / FPS
_I = ARKIT_INDEX


@dataclass
class LivelinessConfig:
    enabled: bool = True            # False: frames are exactly the model's output
    seed: int = 0                   # same audio + seed = same face
    blinks: bool = True             # behaviour groups, each switchable
    gaze: bool = True
    head: bool = True
    brows: bool = True
    idle: bool = True
    brow_scale: float = 1.0         # amplitude of brow raises on emphasis
    idle_scale: float = 1.0         # amplitude of breathing and micro-movements
    look_range: tuple[float, float] = (25.8, 20.0)  # deg of eye yaw, pitch at eyeLook weight 1 (the default avatar)
    blink_timing: BlinkConfig = field(default_factory=BlinkConfig)
    gaze_behaviour: GazeConfig = field(default_factory=GazeConfig)
    head_motion: HeadConfig = field(default_factory=HeadConfig)

    def validate(self) -> LivelinessConfig:
        b, g, h = self.blink_timing, self.gaze_behaviour, self.head_motion
        checks = [
            (0 <= self.seed < 2 ** 63, f"liveliness seed must be within 0..2^63-1, got {self.seed}"),
            (0.0 <= self.brow_scale <= 5.0, f"brow_scale must be within 0..5, got {self.brow_scale}"),
            (0.0 <= self.idle_scale <= 5.0, f"idle_scale must be within 0..5, got {self.idle_scale}"),
            (0.0 <= h.scale <= 10.0, f"head scale must be within 0..10, got {h.scale}"),
            (0.0 <= b.rate_speaking <= 120 and 0.0 <= b.rate_silent <= 120,
             f"blink rates must be within 0..120 per minute, got {b.rate_speaking}, {b.rate_silent}"),
            (min(*b.close, *b.open) > 0.0, "blink close/open durations must be > 0"),
            (all(x > 0 for x in self.look_range), f"look_range must be > 0 degrees, got {self.look_range}"),
            (all(x >= 0 for x in (*g.eye_limits, *g.head_limits)), "gaze eye/head limits must be >= 0 degrees"),
            (0.0 <= g.head_share_target <= 1.0, f"head_share_target must be within 0..1, got {g.head_share_target}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


def liveliness_config(path: str = "", enabled: bool | None = None, seed: int | None = None,
                      head_scale: float | None = None, **groups: bool) -> LivelinessConfig:
    """The layer's settings from a YAML file (``path``; "" = defaults) with the switches that the node's parameters
    and ``lsf infer``'s flags give on top. Errors name the file or the value."""
    cfg = load_config(LivelinessConfig, path or None)
    if enabled is not None:
        cfg.enabled = bool(enabled)
    if seed is not None:
        cfg.seed = int(seed)
    if head_scale is not None:
        cfg.head_motion.scale = float(head_scale)
    for name, on in groups.items():
        if name not in GROUPS:
            raise ValueError(f"unknown liveliness group {name!r}; groups: {', '.join(GROUPS)}")
        setattr(cfg, name, bool(on))
    return cfg.validate()


class _Expression:
    """Brow raises on accents, brows following the voice's pitch, breathing and micro-movements."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._raises: list[tuple[float, float, float, float]] = []   # onset, hold, fall, amplitude
        self._pitch = Track(0.0)
        self._micro_f = rng.uniform(0.04, 0.3, (len(_MICRO), 2))
        self._micro_p = rng.uniform(0.0, 2 * math.pi, (len(_MICRO), 2))
        self._breath_f = rng.uniform(0.2, 0.3)
        self._breath_p = rng.uniform(0.0, 2 * math.pi)

    def tick(self, t: float, speaking: bool, accent: float, pitch: float) -> None:
        self._pitch.push(t, max(0.0, pitch) if speaking else 0.85 * self._pitch.last)
        self._raises = [r for r in self._raises if t - r[0] < 2.0]
        if accent > 0.0 and speaking and self.rng.random() < 0.55:
            self._raises.append((t + self.rng.uniform(0.0, TICK), self.rng.uniform(0.1, 0.3),
                                 self.rng.uniform(0.3, 0.45), min(1.0, accent) * self.rng.uniform(0.18, 0.35)))

    def brows(self, t: float) -> float:
        """Brow raise 0..1 at time ``t``."""
        v = 0.08 * float(self._pitch.at(t))
        for onset, hold, fall, amp in self._raises:
            dt = t - onset
            rise = 0.15
            if 0.0 < dt < rise:
                v += amp * 0.5 * (1 - math.cos(math.pi * dt / rise))
            elif rise <= dt < rise + hold:
                v += amp
            elif rise + hold <= dt < rise + hold + fall:
                v += amp * 0.5 * (1 + math.cos(math.pi * (dt - rise - hold) / fall))
        return v

    def micro(self, t: float) -> np.ndarray:
        """(len(_MICRO),) small non-negative weights drifting at 0.04-0.3 Hz."""
        s = np.sin(2 * math.pi * self._micro_f * t + self._micro_p).sum(axis=1)
        return _MICRO_AMP * (0.5 + 0.25 * s)

    def breath(self, t: float) -> float:
        """Breathing phase -1..1."""
        return math.sin(2 * math.pi * self._breath_f * t + self._breath_p)


_MICRO = [_I[n] for n in ("browInnerUp", "browDownLeft", "browDownRight", "eyeSquintLeft", "eyeSquintRight",
                          "cheekSquintLeft", "cheekSquintRight")]
_MICRO_AMP = np.array([0.04, 0.04, 0.04, 0.06, 0.06, 0.03, 0.03])


class Liveliness:
    """One face's liveliness. ``eye_centre``: the point between the eyes in the face frame (m); ``look``: model
    frames of audio look-ahead the engine has when it emits a frame; ``speech_db``: loudness of speech."""

    def __init__(self, config: LivelinessConfig, eye_centre: np.ndarray, look: int, speech_db: float):
        self.config = config.validate()
        self.eye_centre = np.asarray(eye_centre, np.float64)
        self._cues = CueTracker(speech_db, look)
        self._features = FrameFeatures()
        self._head_follow = Track(np.zeros(2))
        self._target: np.ndarray | None = None   # gaze target direction (deg), kept across streams
        self._target_seen = 0.0
        self._start(0.0)
        self.new_stream()

    def _start(self, t0: float) -> None:
        """Behaviour drawn afresh from the seed and the stream's start stamp ``t0``."""
        c = self.config
        entropy = [c.seed, int(round(t0 * 1000.0)) & (2 ** 63 - 1)]
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(len(GROUPS))]
        self.blinker = BlinkScheduler(c.blink_timing, rngs[0])
        self.gaze = GazeController(c.gaze_behaviour, rngs[1])
        self.head = HeadMotion(c.head_motion, rngs[2])
        self._expr = _Expression(rngs[3])
        self._cues.reset()
        self._t = t0                        # time of the last tick
        self._stream_t0 = t0
        if self._target is not None:
            self.gaze.set_target(self._target, t0)
        else:
            self._head_follow = Track(np.zeros(2))

    def new_stream(self) -> None:
        """The engine started a new stream (its model frames count from 0 again)."""
        self._features = FrameFeatures()
        self._next_tick = 0
        self._stream_t0 = None

    def add_audio(self, chunk: np.ndarray) -> None:
        self._features.add_audio(chunk)

    def forget_before(self, k: int) -> None:
        self._features.forget_before(k - 2)

    def set_groups(self, **flags: bool) -> None:
        for name, on in flags.items():
            if name not in GROUPS:
                raise ValueError(f"unknown liveliness group {name!r}; groups: {', '.join(GROUPS)}")
            setattr(self.config, name, bool(on))

    # ---- gaze target ----------------------------------------------------------------------------------
    def look_at(self, point: np.ndarray | None, seen: float = 0.0) -> str | None:
        """Look at ``point`` (x, y, z metres in the head parent frame, REP-103), or None to look naturally
        again; ``seen``: when the point was received (any clock, see ``drop_stale_target``). Returns why the
        target cannot be looked at as given (then the gaze goes as far as the limits allow, or ignores a
        target that is not a finite point), or None."""
        self._target_seen = seen
        if point is None:
            self._target = None
            self.gaze.set_target(None, self._t)
            return None
        p = np.asarray(point, np.float64).reshape(-1)
        if p.size != 3 or not np.isfinite(p).all():
            return f"gaze target {p.tolist()} is not a finite 3-d point: ignored"
        d = parent_to_face(p) - self.eye_centre
        if np.linalg.norm(d) < 0.05:
            return f"gaze target {p.tolist()} is {np.linalg.norm(d) * 100:.1f} cm from the eyes: ignored"
        yaw, pitch = direction(d)
        g = self.config.gaze_behaviour
        reach = (g.eye_limits[0] + g.head_limits[0], g.eye_limits[1] + g.head_limits[1])
        reason = None
        if abs(yaw) > reach[0] or abs(pitch) > reach[1]:
            reason = (f"gaze target {np.round(p, 3).tolist()} is at yaw {yaw:.0f} deg, pitch {pitch:.0f} deg, beyond "
                      f"the reach of eyes + head ({reach[0]:.0f}, {reach[1]:.0f} deg): looking as far as the limits "
                      "allow")
        self._target = np.clip([yaw, pitch], [-reach[0], -reach[1]], [reach[0], reach[1]])
        self.gaze.set_target(self._target, self._t)
        return reason

    def drop_stale_target(self, now: float, timeout: float) -> bool:
        """Return to natural gaze when the target was last seen more than ``timeout`` s before ``now`` (same
        clock as ``look_at``'s ``seen``). True when a target was dropped."""
        if self._target is None or now - self._target_seen <= timeout:
            return False
        self.look_at(None, now)
        return True

    @property
    def has_target(self) -> bool:
        return self._target is not None

    # ---- frames ---------------------------------------------------------------------------------------
    def _tick(self, t: float, k: int) -> None:
        cues = self._cues.step(self._features, k)
        self.blinker.tick(t, TICK, cues.speaking, cues.pause_start)
        self.gaze.tick(t, TICK, cues.speaking, cues.phrase_start, cues.pause_start)
        self.head.tick(t, TICK, cues.speaking, cues.accent, cues.pitch)
        self._expr.tick(t, cues.speaking, cues.accent, cues.pitch)
        goal = self.gaze.head_goal
        prev = self._head_follow.last
        a = 1.0 - math.exp(-TICK / self.config.gaze_behaviour.head_time)
        self._head_follow.push(t, prev + a * (goal - prev))
        self._t = t

    def frame(self, t0: float, k: int, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Additive ARKit weights (52,) and pose angles (5,) radians for the output frame at absolute time ``t``
        in model frame ``k`` of the stream that started at ``t0``."""
        if self._stream_t0 is None:
            self._start(t0)
        while self._next_tick <= k + 1:
            self._tick(t0 + self._next_tick * TICK, self._next_tick)
            self._next_tick += 1
        return self._evaluate(t)

    def _evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        delta = np.zeros(len(ARKIT_NAMES), np.float64)
        head = np.zeros(3)
        if c.head:
            head += self.head.angles(t)
        if c.idle:
            breath = self._expr.breath(t)
            head[1] -= 0.2 * c.idle_scale * breath            # the head rises a little on each breath
            delta[_MICRO] += c.idle_scale * self._expr.micro(t)
        if c.gaze:
            head[:2] += self._head_follow.at(t)
        g = c.gaze_behaviour
        head = np.clip(head, -np.asarray(g.head_limits), np.asarray(g.head_limits))
        eyes = np.zeros(2)
        if c.gaze:
            eyes = np.clip(self.gaze.position(t) - head[:2], -np.asarray(g.eye_limits), np.asarray(g.eye_limits))
            yaw, pitch = eyes / np.asarray(c.look_range)
            left, right = max(0.0, yaw), max(0.0, -yaw)       # looking to the face's left / right
            delta[[_I["eyeLookOutLeft"], _I["eyeLookInRight"]]] += min(1.0, left)
            delta[[_I["eyeLookInLeft"], _I["eyeLookOutRight"]]] += min(1.0, right)
            delta[[_I["eyeLookDownLeft"], _I["eyeLookDownRight"]]] += min(1.0, max(0.0, pitch))
            delta[[_I["eyeLookUpLeft"], _I["eyeLookUpRight"]]] += min(1.0, max(0.0, -pitch))
            delta[[_I["eyeBlinkLeft"], _I["eyeBlinkRight"]]] += 0.35 * min(1.0, max(0.0, pitch))  # lids follow
            delta[[_I["eyeWideLeft"], _I["eyeWideRight"]]] += 0.25 * min(1.0, max(0.0, -pitch))
        if c.blinks:
            b = self.blinker.value(t)
            delta[[_I["eyeBlinkLeft"], _I["eyeBlinkRight"]]] += b
            delta[[_I["cheekSquintLeft"], _I["cheekSquintRight"]]] += 0.15 * b
        if c.brows:
            raise_ = c.brow_scale * self._expr.brows(t)
            delta[_I["browInnerUp"]] += raise_
            delta[[_I["browOuterUpLeft"], _I["browOuterUpRight"]]] += 0.8 * raise_
            delta[[_I["eyeWideLeft"], _I["eyeWideRight"]]] += 0.3 * raise_
        pose = np.radians(np.concatenate([head, eyes]))
        return delta.astype(np.float32), pose.astype(np.float32)
