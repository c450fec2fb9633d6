"""``lsf data track``: a real talking-face clip (GRID s1, CC BY 4.0, test/fixtures/real) -> the documented NPZ;
faces that are gone are masked, not invented; a batch keeps going past bad videos and says why."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.data.track import (
    TRACK_FIELDS,
    TrackConfig,
    TrackError,
    fit_calibration,
    load_track,
    to_model_grid,
    track_videos,
)
from lsf_core.models.base import num_frames

pytest.importorskip("mediapipe")
FIXTURE = Path(__file__).parent / "fixtures" / "real" / "grid_s1_bbaf2n.mkv"
JAW = ARKIT_INDEX["jawOpen"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The fixture clip, a copy with 1.0-1.6 s blacked out, one without audio, one without a face, one not a
    video: tracked as one batch (one speaker)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    d = tmp_path_factory.mktemp("videos")
    clip = d / "clip.mkv"
    shutil.copy(FIXTURE, clip)
    _ffmpeg("-i", str(FIXTURE), "-vf", "drawbox=enable='between(t,1.0,1.6)':x=0:y=0:w=iw:h=ih:color=black:t=fill",
            "-c:v", "libx264", "-crf", "30", "-c:a", "copy", str(d / "blacked.mkv"))
    _ffmpeg("-i", str(FIXTURE), "-an", "-c:v", "copy", str(d / "silent_film.mkv"))
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=360x288:r=25:d=2", "-f", "lavfi", "-i",
            "sine=frequency=220:sample_rate=16000:duration=2", "-c:v", "libx264", "-c:a", "flac", "-shortest",
            str(d / "no_face.mkv"))
    # the same clip at 30 fps, its picture starting 0.2 s after its sound
    _ffmpeg("-itsoffset", "0.2", "-i", str(FIXTURE), "-i", str(FIXTURE), "-map", "0:v", "-map", "1:a", "-vf", "fps=30",
            "-c:v", "libx264", "-crf", "30", "-c:a", "copy", str(d / "late30.mkv"))
    (d / "broken.mp4").write_text("not a video")
    out = tmp_path_factory.mktemp("tracks")
    videos = [clip, d / "blacked.mkv", d / "late30.mkv", d / "silent_film.mkv", d / "no_face.mkv", d / "broken.mp4"]
    report = track_videos(videos, out, TrackConfig(), speaker="s1", provenance="test", licence="CC BY 4.0",
                          progress=False)
    return out, report, d


def test_track_writes_the_documented_fields(tracked):
    """Catches: a documented field missing or of the wrong shape, the model grid's length off the audio's frame
    count, unmeasured channels (tongueOut) left unmasked, a pickled NPZ, the face not moving the jaw."""
    out, _, _ = tracked
    path = out / "clip.npz"
    with np.load(path, allow_pickle=False) as z:
        assert set(TRACK_FIELDS) <= set(z.files)
    z = load_track(path)
    t = num_frames(z["audio"].size, 25, 16000)
    assert int(z["sample_rate"]) == 16000 and float(z["fps"]) == 25.0 and abs(z["audio"].size / 16000 - 2.98) < 0.05
    assert list(z["names"]) == list(ARKIT_NAMES)
    assert z["weights"].shape == z["raw_weights"].shape == z["mask"].shape == (t, 52)
    assert z["frame_mask"].shape == (t,) and z["head_pose"].shape == (t, 6)
    assert z["frame_mask"].all(), "the face is visible in every frame of the fixture"
    assert not z["mask"][:, ARKIT_INDEX["tongueOut"]].any(), "MediaPipe has no tongueOut: it must be masked"
    assert z["mask"][:, JAW].all()
    assert z["weights"].min() >= 0.0 and z["weights"].max() <= 1.0
    assert z["weights"][:, JAW].std() > 0.03, "the speaker's jaw moves"
    # calibration: the neutral is subtracted (quiet start and end near 0), raw scores kept beside
    assert z["weights"][:5, JAW].max() < 0.03 and z["raw_weights"][:, JAW].min() >= z["calib_neutral"][JAW] - 0.05
    assert str(z["licence"]) == "CC BY 4.0" and str(z["speaker"]) == "s1"
    assert np.isfinite(z["head_pose"]).all() and np.abs(z["head_pose"][:, :3]).max() < 0.5


def test_frames_without_a_face_are_masked(tracked):
    """Catches: frames where the face is gone filled in (interpolated, held, or left at the tracker's last
    values) instead of masked, or the mask shifted off the blacked-out time."""
    out, _, _ = tracked
    z = load_track(out / "blacked.npz")
    t = np.arange(len(z["frame_mask"])) / 25.0
    gone = (t > 1.0 + 0.045) & (t < 1.6 - 0.045)
    seen = (t < 1.0 - 0.045) | (t > 1.6 + 0.045)
    assert not z["frame_mask"][gone].any()
    assert z["frame_mask"][seen].mean() > 0.95
    assert not z["mask"][gone].any() and (z["weights"][gone] == 0).all()
    full = load_track(out / "clip.npz")
    both = seen & z["frame_mask"]
    assert np.abs(z["weights"][both, JAW] - full["weights"][both, JAW]).max() < 0.1


def test_batch_keeps_going_and_says_why(tracked):
    """Catches: a bad video stopping the batch, or being skipped silently or without naming the file and why."""
    out, report, d = tracked
    assert sorted(Path(w["npz"]).name for w in report["written"]) == ["blacked.npz", "clip.npz", "late30.npz"]
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"silent_film.mkv", "no_face.mkv", "broken.mp4"}
    assert "no audio track" in reasons["silent_film.mkv"] and str(d / "silent_film.mkv") in reasons["silent_film.mkv"]
    assert "no face" in reasons["no_face.mkv"]
    assert "not a readable video" in reasons["broken.mp4"] or "no video stream" in reasons["broken.mp4"]
    assert (out / "track_report.json").is_file()
    assert "s1" in report["calibration"] and "jawOpen" in report["calibration"]["s1"]["measured"]


def test_video_rate_and_start_are_honoured(tracked):
    """Catches: the video's own frame rate or its start time (against the audio's) ignored: a 30 fps copy whose
    picture starts 0.2 s late must give the original's curves 5 model frames later, and nothing before 0.2 s."""
    out, _, _ = tracked
    late, full = load_track(out / "late30.npz"), load_track(out / "clip.npz")
    assert not late["frame_mask"][:5].any()
    both = late["frame_mask"][5:] & full["frame_mask"][:-5]
    assert both.sum() > 50
    a, b = late["weights"][5:][both, JAW], full["weights"][:-5][both, JAW]
    assert np.corrcoef(a, b)[0, 1] > 0.9 and np.abs(a - b).mean() < 0.03


def test_model_grid_follows_the_audio_clock():
    """Catches: the video's start offset or its own frame rate ignored when sampling onto the model grid, or a
    model frame next to a lost video frame kept."""
    fps_v, start = 30.0, 0.1                      # video starts 100 ms after the audio
    times = np.arange(60) / fps_v + start
    ok = np.ones(60, bool)
    ok[30] = False                                # video frame at 1.1 s lost
    grid, valid = to_model_grid(times, times[:, None], ok, 50, 25.0)
    t = np.arange(50) / 25.0
    inside = (t >= start) & (t <= times[-1])
    near_lost = np.abs(t - times[30]) < 1 / fps_v
    assert not valid[~inside].any() and not valid[near_lost].any()
    assert valid[inside & ~near_lost].all()
    assert np.allclose(grid[valid, 0], t[valid], atol=1e-5)


def test_calibration_neutral_range_and_unmeasured_channels():
    """Catches: the neutral not taken from the low-activity frames, silent channels kept as measurements, the
    target range not reached, an unknown target name accepted."""
    rng = np.random.default_rng(0)
    raw = np.zeros((400, 52))
    raw[:, JAW] = 0.1 + np.abs(rng.normal(0, 0.1, 400)) * (np.arange(400) % 4 != 0)   # rests at 0.1
    raw[:, ARKIT_INDEX["mouthClose"]] = 0.05                                          # never moves
    cal = fit_calibration([raw], [np.ones(400, bool)], TrackConfig(target_ranges={"jawOpen": 0.6}))
    assert abs(cal.neutral[JAW] - 0.1) < 1e-6
    assert cal.measured[JAW] and not cal.measured[ARKIT_INDEX["mouthClose"]]
    w, mask = cal.apply(raw.astype(np.float32), np.ones(400, bool))
    assert abs(np.quantile(w[:, JAW], 0.99) - 0.6) < 0.02
    assert not mask[:, ARKIT_INDEX["mouthClose"]].any()
    with pytest.raises(TrackError, match="not an ARKit name"):
        fit_calibration([raw], [np.ones(400, bool)], TrackConfig(target_ranges={"jaw_open": 0.5}))
    with pytest.raises(TrackError, match="no tracked face"):
        fit_calibration([raw], [np.zeros(400, bool)], TrackConfig())


def test_track_cli_takes_folders_and_reports(tmp_path, capsys):
    """Catches: ``lsf data track`` not expanding a folder into its videos, ignoring --limit, or exiting 0 when
    nothing could be tracked."""
    from lsf_core.cli.main import main

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(FIXTURE, videos / "a.mkv")
    shutil.copy(FIXTURE, videos / "b.mkv")
    (videos / "notes.txt").write_text("not a video")
    assert main(["data", "track", str(videos), "-o", str(tmp_path / "out"), "--limit", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npz")) == ["a.npz"]
    assert "1 clips tracked" in capsys.readouterr().out
    (tmp_path / "bad.mp4").write_text("x")
    assert main(["data", "track", str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "out2")]) == 1
    assert f"skipped {tmp_path / 'bad.mp4'}" in capsys.readouterr().out


def test_liveliness_eval_reads_tracked_clips(tracked):
    """Catches: ``lsf liveliness-eval``'s reader taking the calibrated instead of the tracker's raw scores, head
    angles in the wrong unit, or ignoring the frame mask on clips written by ``lsf data track``."""
    from lsf_core.evaluation.liveliness_eval import read_track

    out, _, _ = tracked
    got, z = read_track(out / "blacked.npz"), load_track(out / "blacked.npz")
    assert np.array_equal(got["weights"], z["raw_weights"]) and np.array_equal(got["detected"], z["frame_mask"])
    assert np.allclose(got["angles"], np.degrees(z["head_pose"][:, :3]), atol=1e-4)
    assert not got["detected"].all()
