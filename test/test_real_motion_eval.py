"""``lsf evaluate --real``: the numbers on constructed cases (known correlation, known lag, known motion range,
masked frames), and the command end to end on an imported real take (our model beside the phone baseline)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lsf_core.arkit import ARKIT_INDEX
from lsf_core.evaluation.real_motion import RealClip, channel_scores, load_real_clips, shifted, summarize

JAW, FUNNEL, CLOSE = ARKIT_INDEX["jawOpen"], ARKIT_INDEX["mouthFunnel"], ARKIT_INDEX["mouthClose"]
REPO = Path(__file__).resolve().parents[1]


def _smooth(rng, n: int) -> np.ndarray:
    x = np.convolve(rng.normal(size=n + 20), np.hanning(9), "same")[10:-10]
    return (x - x.min()) / (x.max() - x.min())


def _clip(real: np.ndarray, mask: np.ndarray | None = None) -> RealClip:
    return RealClip("c", np.zeros(len(real) * 640, np.float32), 25.0, real.astype(np.float32),
                    np.ones(real.shape, bool) if mask is None else mask)


def test_known_correlation_and_motion_range():
    """Catches: r computed over masked frames (garbage there), the std ratio inverted or unpooled, channels that
    do not move in the reference (or are never measured) counted."""
    rng = np.random.default_rng(1)
    n = 400
    y = _smooth(rng, n)
    w = rng.normal(size=n)
    w -= w.mean()
    yc = y - y.mean()
    w -= yc * (w @ yc) / (yc @ yc)                                  # w orthogonal to y
    x = 0.6 * yc / yc.std() + 0.8 * w / w.std()                      # corr(x, y) = 0.6 exactly
    real, ours = np.zeros((n + 50, 52)), np.zeros((n + 50, 52))
    real[:n, JAW], ours[:n, JAW] = 0.2 * y, 0.05 * x                 # ours' std = 0.05, the real one 0.2 * std(y)
    real[n:, JAW], ours[n:, JAW] = 5.0, -3.0                         # garbage in masked frames
    real[:, CLOSE] = 0.01                                            # the reference does not move
    real[:, FUNNEL], ours[:, FUNNEL] = rng.random(n + 50), rng.random(n + 50)
    mask = np.ones((n + 50, 52), bool)
    mask[n:] = False
    mask[:, FUNNEL] = False                                          # never measured
    scores = channel_scores([ours.astype(np.float32)], [_clip(real, mask)])
    assert set(scores) == {"jawOpen"}
    flat = channel_scores([np.zeros_like(ours, np.float32)], [_clip(real, mask)])["jawOpen"]
    assert flat["r"] is None and flat["best_lag_ms"] is None and flat["std_ratio"] == 0.0
    s = scores["jawOpen"]
    assert abs(s["r"] - 0.6) < 1e-4 and s["frames"] == n
    assert abs(s["std_ratio"] - 0.05 / (0.2 * y.std())) < 1e-3
    summary = summarize(scores)
    assert summary["mouth_channels"] == 1 and abs(summary["mouth_mean_r"] - 0.6) < 1e-4


@pytest.mark.parametrize("lead_frames", [3, -2])
def test_known_lag(lead_frames):
    """Catches: the lag's sign flipped (positive = our curve leads the real one), lags not searched, the zero-lag r
    replaced by the best one; pooled over two clips."""
    rng = np.random.default_rng(2)
    clips, curves = [], []
    for _ in range(2):
        full = _smooth(rng, 320)
        real = np.zeros((300, 52))
        real[:, JAW] = full[10:310]
        ours = np.zeros((300, 52), np.float32)
        ours[:, JAW] = full[10 + lead_frames:310 + lead_frames]      # ours(t) = real(t + lead)
        clips.append(_clip(real))
        curves.append(ours)
    s = channel_scores(curves, clips)["jawOpen"]
    assert s["best_lag_ms"] == pytest.approx(lead_frames * 40.0)
    assert s["r_best"] > 0.999 and s["r"] < s["r_best"] - 0.05


def test_shifted_reference_respects_the_mask():
    """Catches: an interpolated reference value built from a masked neighbour, or from beyond the clip."""
    v = np.arange(10.0)[:, None]
    m = np.ones((10, 1), bool)
    m[5] = False
    out, ok = shifted(v, m, 0.5)
    assert np.allclose(out[ok[:, 0], 0], np.arange(10)[ok[:, 0]] + 0.5)
    assert list(np.flatnonzero(~ok[:, 0])) == [4, 5, 9]


def test_evaluate_real_cli_on_an_imported_take(tmp_path):
    """Catches: the command failing on a real take, the baseline missing beside ours, the figure not written; on
    FACEGOOD's real (animator-cleaned) jaw both must relate positively to the real curve."""
    pytest.importorskip("pocketsphinx")
    from lsf_core.cli.main import main

    fix = REPO / "test" / "fixtures" / "real"
    takes = tmp_path / "takes"
    assert main(["data", "import-rig", str(fix / "facegood_1114_3_15_head.npy"), "-o", str(takes), "--audio",
                 str(fix / "facegood_1114_3_15_head.wav"), "--mapping",
                 str(REPO / "config" / "rig_maps" / "facegood_arkit.yaml")]) == 0
    assert len(load_real_clips(takes)) == 1
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--real", str(takes), "--json", str(out), "--figure", str(tmp_path / "fig.png")]) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == 1 and set(result["sources"]) == {"ours", "baseline"}
    for source in ("ours", "baseline"):
        s = result["sources"][source]["summary"]
        assert s["jawOpen_r"] is not None and s["jawOpen_r"] > 0.1, (source, s)
        assert "eyeBlinkLeft" not in result["sources"][source]["channels"]   # masked in the reference
    assert [Path(f).name for f in result["figures"]] == ["fig_facegood_1114_3_15_head.png"]
    assert Path(result["figures"][0]).stat().st_size > 10_000
    shifted = tmp_path / "shifted.json"      # another voice: the same take 4 semitones higher
    assert main(["evaluate", "--real", str(takes), "--no-baseline", "--pitch-shift", "4", "--json", str(shifted)]) == 0
    up = json.loads(shifted.read_text())
    assert up["pitch_shift_semitones"] == 4.0 and "--pitch-shift 4" in up["command"]
    r0, r4 = (x["sources"]["ours"]["summary"]["jawOpen_r"] for x in (result, up))
    assert r4 is not None and abs(r4 - r0) > 1e-4, (r0, r4)      # the model heard other audio
    assert main(["evaluate", "--real", str(takes), "--no-baseline", "--video", str(tmp_path / "v.mp4"),
                 "--video-clip", "nope"]) == 2                      # named before any work is done
    assert main(["evaluate", "--real", str(takes), "--no-baseline", "--video", str(tmp_path / "v.mp4"), "--json",
                 str(out)]) == 0
    frames, has_audio = _mp4_frames(Path(json.loads(out.read_text())["video"]))
    assert has_audio and frames.shape[2] == 2 * 320 and len(frames) == len(load_real_clips(takes)[0].real)


def _mp4_frames(path: Path) -> tuple[np.ndarray, bool]:
    """Decoded RGB frames of an MP4 (ffmpeg) and whether it holds an audio stream (ffprobe)."""
    import subprocess

    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height", "-of", "json",
                            str(path)], capture_output=True, text=True, check=True)
    streams = json.loads(probe.stdout)["streams"]
    video = next(st for st in streams if st["codec_type"] == "video")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    w, h = video["width"], video["height"]
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3), any(st["codec_type"] == "audio" for st in streams)


def test_side_by_side_video_shows_each_source_in_its_own_panel(tmp_path):
    """Catches: panels swapped or driven by the wrong curves, unmeasured (masked) channels animated on the real
    side, the audio left out. The real jaw opens in the second half; ours never moves; the baseline always open."""
    from lsf_core.evaluation.real_motion import side_by_side_video

    n = 20
    real = np.zeros((n, 52), np.float32)
    real[n // 2:, JAW] = 1.0
    real[:, FUNNEL] = 1.0                                            # not measured: must stay neutral
    mask = np.ones((n, 52), bool)
    mask[:, FUNNEL] = False
    ours, base = np.zeros((n, 52), np.float32), np.zeros((n, 52), np.float32)
    base[:, JAW] = 1.0
    clip = RealClip("c", (0.1 * np.sin(np.arange(n * 640) / 5.0)).astype(np.float32), 25.0, real, mask)
    frames, has_audio = _mp4_frames(side_by_side_video(tmp_path / "sbs.mp4", clip, ours, base, size=96))
    assert has_audio and abs(len(frames) - n) <= 1 and frames.shape[2] == 3 * 96
    early, late = frames[2].astype(float), frames[-3].astype(float)
    change = [np.abs(late[:, k * 96:(k + 1) * 96] - early[:, k * 96:(k + 1) * 96]).mean() for k in range(3)]
    assert change[0] > 5 * max(change[1], change[2], 0.05), change          # only the real jaw opened
    face = early[20:, 96:192]                                                # ours, under its label
    opened = [np.abs(early[20:, k * 96:(k + 1) * 96] - face).mean() for k in (0, 2)]
    assert opened[1] > 2.5 * max(opened[0], 0.5), opened                     # the baseline open, the real closed


@pytest.mark.parametrize("delay", [0.06, -0.03])
def test_closure_offset_of_a_delayed_picture(delay):
    """Catches: the offset's sign flipped (> 0: picture later than sound), closures looked for outside the /p b m/
    window or in masked frames, no sub-frame refinement (30 ms is under a 40 ms frame)."""
    from lsf_core.evaluation.av_offset import closure_offsets

    fps, mids = 25.0, [0.5, 1.3, 2.1]
    t = np.arange(75) / fps
    w = np.zeros((75, 52), np.float32)
    w[:, JAW] = 0.4
    for m in mids:                                    # lips shut (aperture dips) at the bilabial middle + delay
        w[:, JAW] -= 0.4 * np.exp(-0.5 * ((t - m - delay) / 0.05) ** 2)
    mask = np.ones((75, 52), bool)
    mask[:, JAW] &= ~((t > 2.0) & (t < 2.3))         # the third closure falls in lost frames
    phones = ["SIL", "B", "AA", "M", "IY", "P", "SIL"]
    starts = [0.0, 0.45, 0.55, 1.25, 1.35, 2.05, 2.15]
    ends = [0.45, 0.55, 1.25, 1.35, 2.05, 2.15, 3.0]
    out = closure_offsets(w, mask, fps, phones, starts, ends)
    assert len(out) == 2
    assert np.allclose(out, delay, atol=0.008)


def _modulated_clips(n_clips: int, seed: int, seconds: float = 4.0) -> list[RealClip]:
    """Noise whose loudness follows a smooth envelope; jawOpen is that envelope (the audio carries it), mouthFunnel
    an independent smooth curve (it does not); mouthClose is measured only in the first half and holds the opposite
    of the envelope after it (unmeasured: a fit that read it would cancel out)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 25)
    clips = []
    for i in range(n_clips):
        env, other = _smooth(rng, n), _smooth(rng, n)
        audio = (rng.normal(size=n * 640) * np.repeat(0.02 + env, 640)).astype(np.float32)
        real = np.zeros((n, 52), np.float32)
        real[:, JAW], real[:, FUNNEL], real[:, CLOSE] = env, other, env
        mask = np.zeros((n, 52), bool)
        mask[:, [JAW, FUNNEL]] = True
        mask[: n // 2, CLOSE] = True
        real[n // 2:, CLOSE] = 1 - env[n // 2:]
        clips.append(RealClip(f"c{seed}_{i}", audio, 25.0, real, mask))
    return clips


def test_readout_predicts_what_the_audio_carries_and_only_that():
    """Catches a read-out that does not learn from the audio, one that finds a curve the audio does not carry
    (fitted or scored on the held-out clips), and one that fits on unmeasured frames (garbage there)."""
    from lsf_core.evaluation.readout import fit_readout

    train, heldout = _modulated_clips(6, seed=3), _modulated_clips(2, seed=4)
    readout = fit_readout(train)
    scores = channel_scores([readout.predict(c) for c in heldout], heldout)
    assert scores["jawOpen"]["r"] > 0.8, scores["jawOpen"]
    assert abs(scores["mouthFunnel"]["r"]) < 0.4, scores["mouthFunnel"]
    assert scores["mouthClose"]["r"] > 0.8, scores["mouthClose"]             # the garbage half was not fitted
    assert set(readout.lambdas) == {"jawOpen", "mouthFunnel", "mouthClose"}  # only measured channels
    with pytest.raises(ValueError, match="at least 4"):
        fit_readout(train[:3])


def test_evaluate_real_readout_on_other_clips_only(tmp_path):
    """Catches the command scoring a read-out fitted on the clips it is judged on, or leaving it out."""
    from lsf_core.arkit import ARKIT_NAMES
    from lsf_core.cli.main import main

    def write(folder, clips):
        folder.mkdir()
        for c in clips:
            np.savez(folder / f"{c.name}.npz", audio=c.audio, sample_rate=16000, fps=25.0, names=np.array(ARKIT_NAMES),
                     weights=np.where(c.mask, c.real, 0), mask=c.mask, frame_mask=np.ones(len(c.real), bool),
                     source="constructed", speaker="s", provenance="test", licence="CC0")

    write(tmp_path / "train", _modulated_clips(5, seed=5))
    write(tmp_path / "held", _modulated_clips(1, seed=6))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--real", str(tmp_path / "held"), "--no-baseline", "--readout", str(tmp_path / "held"),
                 "--json", str(out)]) == 2
    assert not out.exists()
    assert main(["evaluate", "--real", str(tmp_path / "held"), "--no-baseline", "--readout", str(tmp_path / "train"),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["sources"]) == {"ours", "readout"} and result["sources"]["readout"]["train_clips"] == 5
    assert result["sources"]["readout"]["summary"]["jawOpen_r"] > 0.8
    assert "--readout" in result["command"]
