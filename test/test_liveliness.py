"""The liveliness layer: blink timing over a long run, saccades on the main sequence, gaze aversion, a gaze
target (eyes lead, head follows, limits), determinism, and exactly the model's output when it is off."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lsf_core.arkit import ARKIT_INDEX, POSE_NAMES
from lsf_core.face.head_pose import FACE_TO_PARENT, parent_transform, posed_vertices, rotation
from lsf_core.face.retarget import Retargeter, load_retarget_map
from lsf_core.models.base import FPS
from lsf_core.runtime.blinks import BlinkConfig, BlinkScheduler
from lsf_core.runtime.gaze import GazeConfig, Saccade
from lsf_core.runtime.liveliness import Liveliness, LivelinessConfig
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

RATE = 16000
BLINK = ARKIT_INDEX["eyeBlinkLeft"]


def talk(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech-like audio: phrases of voiced syllables (harmonics of a moving f0 under a syllable envelope, some
    stressed: louder and higher) separated by silent pauses. Returns the audio and the phrases' (start, end)."""
    out, phrases, t = [], [], 0.0
    while t < seconds:
        n_syl = int(rng.integers(4, 14))
        phrase = []
        f0 = rng.uniform(100, 180)
        for _ in range(n_syl):
            d = rng.uniform(0.15, 0.3)
            stress = rng.random() < 0.3
            tt = np.arange(int(d * RATE)) / RATE
            f = f0 * (1.25 if stress else 1.0) * (1 + 0.05 * np.sin(2 * np.pi * 3 * tt))
            phase = 2 * np.pi * np.cumsum(f) / RATE
            x = sum(np.sin(h * phase) / h for h in range(1, 6))
            env = np.sin(np.pi * tt / d) ** 2 * (0.3 if stress else 0.12)
            phrase.append(x * env)
        seg = np.concatenate(phrase).astype(np.float32)
        phrases.append((t, t + seg.size / RATE))
        pause = np.zeros(int(rng.uniform(0.5, 1.8) * RATE), np.float32)
        out += [seg, pause]
        t += (seg.size + pause.size) / RATE
    return np.concatenate(out), phrases


def run_layer(config: LivelinessConfig, audio: np.ndarray, rate: float = 25.0, target=None):
    """The layer alone over ``audio`` as the engine drives it: features fed, one frame per output period."""
    live = Liveliness(config, np.array([0.0, 0.012, 0.08]), 3, -50.0)
    live.add_audio(audio)
    n = int(audio.size / RATE * rate)
    deltas, poses = [], []
    for i in range(n):
        t = i / rate
        if target is not None:
            live.look_at(target(t))
        d, p = live.frame(0.0, int(math.floor(t * FPS + 1e-9)), t)
        deltas.append(d)
        poses.append(p)
    return live, np.array(deltas), np.array(poses)


def onsets(curve: np.ndarray, rate: float, level: float = 0.5) -> np.ndarray:
    up = np.nonzero((curve[1:] >= level) & (curve[:-1] < level))[0] + 1
    return up / rate


def in_phrases(times: np.ndarray, phrases) -> np.ndarray:
    return np.array([any(s <= t < e for s, e in phrases) for t in times], bool)


@pytest.fixture(scope="module")
def long_run():
    audio, phrases = talk(np.random.default_rng(1), 900.0)
    live, deltas, poses = run_layer(LivelinessConfig(seed=5), audio)
    return audio, phrases, live, deltas, poses


def test_blink_rates_intervals_and_pauses_over_fifteen_minutes(long_run):
    """Speaking 10-25 blinks/min, silence 8-21 (primary gaze), intervals right-skewed with a refractory start,
    blinks gathered at pause onsets. Kills: the speaking rate ignored (silent rate everywhere) or doubled, pause
    blinks switched off, periodic blinking (interval shape -> large), the refractory minimum dropped."""
    audio, phrases, live, deltas, _ = long_run
    t = onsets(deltas[:, BLINK], 25.0)
    speak = in_phrases(t, phrases)
    speak_time = sum(e - s for s, e in phrases)
    quiet_time = audio.size / RATE - speak_time
    rate_speaking, rate_quiet = speak.sum() / speak_time * 60, (~speak).sum() / quiet_time * 60
    assert 10.0 <= rate_speaking <= 25.0, rate_speaking
    assert 8.0 <= rate_quiet <= 30.0, rate_quiet
    ibi = np.diff(t)
    assert ibi.min() >= 0.45
    cv = ibi.std() / ibi.mean()
    assert 0.4 < cv < 1.0, cv
    assert np.median(ibi) < ibi.mean()       # right-skewed
    # the 0.6 s after a phrase ends hold far more blinks than their share of the time
    after_end = np.array([any(e <= x < e + 0.6 for _, e in phrases) for x in t])
    share_time = 0.6 * len(phrases) / (audio.size / RATE)
    assert after_end.mean() > 2.0 * share_time, (after_end.mean(), share_time)


def test_blink_shape_closes_fast_and_opens_slowly():
    """Closing 100-150 ms, opening 150-250 ms, measured on the curve. Kills: swapped closing/opening times, a
    blink that does not close fully."""
    sched = BlinkScheduler(BlinkConfig(), np.random.default_rng(3))
    blinks = [b for i in range(3000) if (b := sched.tick(i * 0.04, 0.04, True, False)) is not None]
    assert len(blinks) > 20
    for b in blinks:
        ts = np.arange(b.onset - 0.05, b.end + 0.05, 0.001)
        v = np.array([b.value(x) for x in ts])
        assert 0.9 <= v.max() <= 1.0
        shut = np.nonzero(v >= 0.995 * v.max())[0]
        moving = np.nonzero(v > 0.005 * v.max())[0]
        close, reopen = ts[shut[0]] - ts[moving[0]], ts[moving[-1]] - ts[shut[-1]]
        assert 0.09 <= close <= 0.15 and 0.135 <= reopen <= 0.25 and close < reopen, (close, reopen)


def test_saccades_follow_the_main_sequence():
    """Duration 2.2 ms/deg + 21 ms and a peak velocity that saturates, measured on the trajectory.
    Kills: a fixed saccade duration, a profile whose peak velocity ignores the saturation law."""
    cfg = GazeConfig()
    for amp in (1.0, 3.0, 8.0, 15.0, 25.0):
        s = Saccade(0.0, np.zeros(2), np.array([amp, 0.0]), cfg)
        assert s.duration == pytest.approx((2.2 * amp + 21.0) / 1000.0)
        ts = np.arange(0.0, s.duration + 1e-4, 1e-4)
        pos = np.array([s.position(x)[0] for x in ts])
        assert pos[0] == 0.0 and pos[-1] == pytest.approx(amp)
        peak = np.max(np.diff(pos)) / 1e-4
        want = cfg.v_max * (1 - math.exp(-amp / cfg.v_scale))
        assert peak == pytest.approx(want, rel=0.12), (amp, peak, want)


def test_gaze_looks_away_at_phrase_starts_and_at_the_listener_in_silence(long_run):
    """Kendon 1967: most phrases start with the gaze turning away; the listener is looked at more in silence.
    Kills: aversion at phrase start switched off, the same dwell times speaking and silent."""
    audio, phrases, live, _, poses = long_run
    gaze = np.degrees(poses[:, 3:5] + poses[:, 0:2])     # eye-in-head + head = gaze in the rest frame
    away = np.linalg.norm(gaze, axis=1) > 4.0
    starts = [int(s * 25) for s, _ in phrases[:-1]]
    turned = np.mean([away[i + 2:i + 12].any() and not away[max(0, i - 8):i].all() for i in starts])
    assert turned > 0.5, turned
    t = np.arange(len(poses)) / 25.0
    speaking = in_phrases(t, phrases)
    assert away[~speaking].mean() < away[speaking].mean() - 0.1


def test_gaze_target_eyes_lead_and_the_head_follows_within_limits():
    """A target 30 deg to the face's left, then 90 deg (beyond reach), then gone.
    Kills: head and eyes turning together (no lead), eyes not counter-rotating as the head turns, limits
    ignored, a target that is never released."""
    audio = np.zeros(6 * RATE, np.float32)
    left30 = np.array([1.0, math.tan(math.radians(30)), 0.0])  # REP-103: x forward, y left

    def target(t):
        return left30 if t < 2.5 else (np.array([0.0, 1.0, 0.0]) if t < 4.0 else None)

    live, _, poses = run_layer(LivelinessConfig(), audio, 50.0, target)
    deg = np.degrees(poses)
    at = {x: deg[int(x * 50)] for x in (0.3, 2.4, 3.9, 5.9)}
    # 0.3 s in: the eyes are there, the head has only started
    assert at[0.3][3] > 15.0 and at[0.3][0] < 10.0
    # settled: head took its share, eyes the rest, gaze on target (the eye centre sits 8 cm ahead of the origin)
    assert at[2.4][0] == pytest.approx(0.6 * 30, abs=3.5)
    assert at[2.4][0] + at[2.4][3] == pytest.approx(30.0, abs=3.0)
    # beyond reach: both at their limits, no more
    assert deg[:, 0].max() <= 45.0 + 1e-3 and np.abs(deg[:, 3]).max() <= 30.0 + 1e-3
    assert at[3.9][3] == pytest.approx(30.0, abs=0.5)
    assert live.look_at(np.array([0.0, 1.0, 0.0])) is not None           # reported as out of reach
    assert live.look_at(np.array([np.nan, 0.0, 0.0])) is not None        # bad: reported, ignored
    # released: back to natural gaze near the listener
    assert abs(at[5.9][0] + at[5.9][3]) < 16.0


def test_same_seed_same_face_other_seed_other_face(model, rig, speech):
    """Kills: draws from a global or time-seeded generator; a seed that is ignored."""
    def run(seed, rate=30.0):
        anim = StreamingAnimator(StreamConfig(rate=rate, liveliness=LivelinessConfig(seed=seed)), model=model, rig=rig)
        frames = anim.animate(speech, RATE)
        return np.array([f.blendshapes for f in frames]), np.array([f.pose for f in frames])

    b1, p1 = run(7)
    b2, p2 = run(7)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(p1, p2)
    b3, p3 = run(8)
    assert np.abs(p3 - p1).max() > 1e-3
    # the output rate does not change the behaviour: frames at the same instants agree
    b6, p6 = run(7, 60.0)
    np.testing.assert_allclose(p6[::2][: len(p1)], p1, atol=1e-6)


def test_off_is_exactly_the_model_output(model, rig, speech):
    """Kills: the layer leaking into the frames when switched off (or any group when all are off)."""
    base = StreamingAnimator(StreamConfig(rate=25.0, liveliness=LivelinessConfig(enabled=False)), model=model, rig=rig)
    off = base.animate(speech, RATE)
    # the model's own output, through the same gate, computed without the engine's output path
    raw = model(__import__("torch").from_numpy(speech)[None], base._identity)[0].detach().numpy()
    assert len(off) == len(raw)
    on = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig).animate(speech, RATE)
    assert all(not f.pose.any() for f in off) and any(f.pose.any() for f in on)
    assert max(np.abs(a.blendshapes - b.blendshapes).max() for a, b in zip(on, off)) > 0.3   # the layer is there
    speaking = [i for i, f in enumerate(off) if i < len(raw) - 3 and f.blendshapes.any()]
    for i in speaking[5:40]:
        w = np.clip(raw[i], 0, 1) @ base._to_arkit
        np.testing.assert_allclose(off[i].blendshapes, w, atol=2e-5)
        np.testing.assert_allclose(off[i].vertex_offsets, rig.offsets(np.clip(raw[i], 0, 1) @ base._to_rig), atol=1e-5)
    # every group off but the layer on: nothing added either
    quiet = LivelinessConfig(blinks=False, gaze=False, head=False, brows=False, idle=False)
    none = StreamingAnimator(StreamConfig(rate=25.0, liveliness=quiet), model=model, rig=rig).animate(speech, RATE)
    for a, b in zip(none, off):
        np.testing.assert_array_equal(a.blendshapes, b.blendshapes)
        np.testing.assert_array_equal(a.vertex_offsets, b.vertex_offsets)


def test_joint_limits_and_velocity_hold_for_head_and_eyes(tmp_path):
    """Neck and eye servos driven by the layer and a jumping target never leave their limits or exceed their
    speed. Kills: pose inputs not reaching the joints, the velocity limit skipped for pose inputs."""
    path = tmp_path / "map.yaml"
    path.write_text("joints:\n"
                    "  - {name: neck_pan, weights: {headYaw: 1.0}, min: -0.3, max: 0.3, max_velocity: 0.8}\n"
                    "  - {name: eye_pan, weights: {eyeYaw: 1.0}, min: -0.4, max: 0.4, max_velocity: 6.0}\n"
                    "  - {name: lids, weights: {eyeBlink_L: 1.0}, min: 0.0, max: 1.0, max_velocity: 10.0}\n")
    rt = Retargeter(load_retarget_map(path), [n for n in ARKIT_INDEX])
    assert rt.input_names[-len(POSE_NAMES):] == list(POSE_NAMES)
    audio, _ = talk(np.random.default_rng(2), 12.0)

    def target(t):
        return np.array([1.0, (-1) ** int(t) * 1.5, 0.2])   # jumps across the face every second

    _, deltas, poses = run_layer(LivelinessConfig(), audio, 30.0, target)
    joints = np.array([rt.step(np.clip(d, 0, 1), i / 30.0, p) for i, (d, p) in enumerate(zip(deltas, poses))])
    assert joints[:, 0].min() >= -0.3 - 1e-9 and joints[:, 0].max() <= 0.3 + 1e-9
    assert np.abs(np.diff(joints, axis=0)).max(0) == pytest.approx([0.8 / 30, 6.0 / 30, 10.0 / 30], rel=1e-6)
    assert joints[:, 0].max() > 0.29 and joints[:, 0].min() < -0.29   # the neck really turned both ways


def test_head_pose_geometry_signs():
    """Kills: a sign flip in yaw/pitch/roll or a transform that does not rotate about the pivot."""
    nose, pivot = np.array([0.0, 0.0, 0.1]), np.array([0.0, -0.1, 0.0])
    assert (rotation(0.3, 0, 0) @ nose)[0] > 0          # yaw > 0: the nose goes to the face's left (+x)
    assert (rotation(0, 0.3, 0) @ nose)[1] < 0          # pitch > 0: the nose goes down
    assert (rotation(0, 0, 0.3) @ np.array([0, 0.1, 0]))[0] < 0   # roll > 0: the top goes to the face's right
    trans, q = parent_transform(0.2, -0.1, 0.05, pivot)
    x, y, z, w = q
    rq = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    posed = posed_vertices(nose[None, None], np.array([[0.2, -0.1, 0.05]]), pivot)[0, 0]
    np.testing.assert_allclose(rq @ nose + trans, FACE_TO_PARENT @ posed, atol=1e-6)
    np.testing.assert_allclose(posed_vertices(pivot[None, None], np.array([[0.5, 0.4, 0.3]]), pivot)[0, 0], pivot,
                               atol=1e-6)
