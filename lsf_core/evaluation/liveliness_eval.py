"""``lsf liveliness-eval``: our upper face, blinks and head motion against real tracked faces over the same speech.

Real motion: GRID corpus speaker s1 clips (CC BY 4.0) tracked with MediaPipe Face Landmarker into one NPZ per
clip (``blendshapes`` (T, 52) with ``names`` (52, alphabetical, ``_neutral`` first), ``matrix`` (T, 4, 4)
facial transformation, ``detected`` (T,)), beside the clips' ``.mpg`` video (audio) and ``.align`` word
timings (1 tick = 1/25000 s). The reader also takes the clips of ``lsf data track`` (docs/real_motion.md).

Clips are split by their sorted index: even ones calibrate (they were used to choose the layer's defaults),
odd ones are held out; the report gives both, the verdict uses the held-out ones. Per clip and for both
faces: the standard deviation over the clip of each brow, eye and cheek channel (group means), blinks per
minute while speaking (eyeBlink rising through 0.5 between the first and last word), head rotation RMS
about the clip's mean pose and the head's angular speed (RMS and peak, geodesic angle between frames).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX
from lsf_core.face.head_pose import rotation

GROUPS = {
    "brows": ["browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight"],
    "eyes": ["eyeBlinkLeft", "eyeBlinkRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
             "eyeLookUpLeft", "eyeLookUpRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
             "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight"],
    "cheeks": ["cheekSquintLeft", "cheekSquintRight", "cheekPuff"],
}
FPS = 25.0
TICKS_PER_S = 25000.0


class TrackError(ValueError):
    """A tracked clip that cannot be used; the message names the file."""


def read_track(path: str | Path) -> dict[str, np.ndarray]:
    """One tracked clip -> ``weights`` (T, 52) in ARKit order (tongueOut 0), ``angles`` (T, 3) degrees
    (yaw, pitch, roll of the facial transformation), ``detected`` (T,). Reads this module's files and those of
    ``lsf data track`` (its raw tracker scores, head pose and frame mask; 25 fps)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "raw_weights" in z.files:
                return {"weights": z["raw_weights"].astype(np.float32), "detected": z["frame_mask"].astype(bool),
                        "angles": np.degrees(z["head_pose"][:, :3].astype(np.float64))}
            names, bs, matrix, detected = list(z["names"]), z["blendshapes"], z["matrix"], z["detected"].astype(bool)
    except (OSError, KeyError, ValueError) as err:
        raise TrackError(f"{path}: not a tracked clip NPZ ({type(err).__name__}: {err})") from err
    if bs.ndim != 2 or bs.shape[1] != len(names) or matrix.shape != (len(bs), 4, 4) or detected.shape != (len(bs),):
        raise TrackError(f"{path}: inconsistent shapes {bs.shape}, {matrix.shape}, {detected.shape}")
    weights = np.zeros((len(bs), len(ARKIT_INDEX)), np.float32)
    for j, n in enumerate(names):
        if n in ARKIT_INDEX:
            weights[:, ARKIT_INDEX[n]] = bs[:, j]
    r = np.nan_to_num(matrix[:, :3, :3])
    angles = np.degrees(np.stack([np.arctan2(r[:, 0, 2], r[:, 2, 2]), np.arcsin(np.clip(-r[:, 1, 2], -1, 1)),
                                  np.arctan2(r[:, 1, 0], r[:, 1, 1])], 1))
    return {"weights": weights, "angles": angles, "detected": detected & np.isfinite(matrix).all((1, 2))}


def read_align(path: str | Path) -> tuple[float, float]:
    """(first word start, last word end) in seconds from a GRID .align file."""
    words = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] not in ("sil", "sp"):
            words.append((int(parts[0]) / TICKS_PER_S, int(parts[1]) / TICKS_PER_S))
    if not words:
        raise TrackError(f"{path}: no words")
    return words[0][0], words[-1][1]


def _rotations(angles_deg: np.ndarray) -> np.ndarray:
    return np.stack([rotation(*np.radians(a)) for a in angles_deg])


def head_stats(angles_deg: np.ndarray, fps: float = FPS) -> dict[str, float]:
    """Rotation RMS about the mean pose (deg) and angular speed RMS / peak (deg/s) of (T, 3) head angles."""
    a = np.asarray(angles_deg, np.float64)
    rms = float(np.sqrt(((a - a.mean(0)) ** 2).sum(1).mean()))
    r = _rotations(a)
    rel = np.einsum("tij,tkj->tik", r[1:], r[:-1])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)
    speed = np.degrees(np.arccos(cos)) * fps
    return {"rotation_rms_deg": rms, "speed_rms_deg_s": float(np.sqrt((speed ** 2).mean())),
            "speed_peak_deg_s": float(speed.max())}


def blink_onsets(weights: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Frame indices where the mean eyeBlink rises through ``level``."""
    b = weights[:, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]].mean(1)
    return np.nonzero((b[1:] >= level) & (b[:-1] < level))[0] + 1


def clip_stats(weights: np.ndarray, angles_deg: np.ndarray, speech: tuple[float, float]) -> dict[str, float]:
    out = {f"{g}_std": float(np.mean([weights[:, ARKIT_INDEX[n]].std() for n in names])) for g, names in GROUPS.items()}
    lo, hi = speech
    b = blink_onsets(weights) / FPS
    out["blinks_speaking"] = int(((b >= lo) & (b < hi)).sum())
    out["speaking_s"] = hi - lo
    out.update(head_stats(angles_deg))
    return out


def _spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"min": float(v.min()), "p5": float(np.percentile(v, 5)), "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def summarize(real: list[dict], ours: list[dict]) -> dict:
    out: dict = {"clips": len(real)}
    for g in GROUPS:
        r, o = np.mean([c[f"{g}_std"] for c in real]), np.mean([c[f"{g}_std"] for c in ours])
        out[f"{g}_std"] = {"real": float(r), "ours": float(o), "ratio": float(o / r) if r > 1e-6 else None}
    for name, clips in (("real", real), ("ours", ours)):
        minutes = sum(c["speaking_s"] for c in clips) / 60.0
        out.setdefault("blinks_per_min_speaking", {})[name] = sum(c["blinks_speaking"] for c in clips) / minutes
    for key in ("rotation_rms_deg", "speed_rms_deg_s", "speed_peak_deg_s"):
        out[key] = {"real": _spread([c[key] for c in real]), "ours": _spread([c[key] for c in ours])}
    ratios = [out[f"{g}_std"]["ratio"] for g in GROUPS if out[f"{g}_std"]["ratio"] is not None]
    checks = {
        "upper_face_at_least_half": bool(ratios) and min(ratios) >= 0.5,
        "blinks_10_to_25_per_min": 10.0 <= out["blinks_per_min_speaking"]["ours"] <= 25.0,
    }
    for key in ("rotation_rms_deg", "speed_peak_deg_s"):
        r, o = out[key]["real"], out[key]["ours"]
        checks[f"head_{key}_in_real_range"] = r["p5"] <= o["median"] <= r["p95"] and r["min"] <= o["p5"] \
            and o["p95"] <= r["max"]
    out["checks"] = checks
    out["passed"] = all(checks.values())
    return out


def evaluate(animator, track_dir: str | Path, video_dir: str | Path, align_dir: str | Path, max_clips: int = 0,
             progress: bool = True) -> dict:
    """Run ``animator`` on every tracked clip's audio (the layer seeded with its seed + the clip's index);
    statistics of both faces, calibration and held-out."""
    seed = animator.config.liveliness.seed
    from tqdm import tqdm

    from lsf_core.audio import load_audio

    tracks = sorted(Path(track_dir).glob("*.npz"))
    if max_clips:
        tracks = tracks[:max_clips]
    if not tracks:
        raise TrackError(f"{track_dir}: no tracked clips (*.npz)")
    sets: dict[str, tuple[list, list]] = {"calibration": ([], []), "heldout": ([], [])}
    for i, path in enumerate(tqdm(tracks, desc="liveliness-eval", unit="clip", disable=not progress)):
        clip = path.stem
        track = read_track(path)
        speech = read_align(Path(align_dir) / f"{clip}.align")
        audio = load_audio(Path(video_dir) / f"{clip}.mpg")
        animator.config.liveliness.seed = seed + i   # each clip a session of its own (every clip starts at 0 s)
        frames = animator.animate(audio, 16000)
        ours_w = np.stack([f.blendshapes for f in frames])
        ours_a = np.degrees(np.stack([f.pose[:3] for f in frames]))
        ok = track["detected"]
        n = min(len(ours_w), len(ok))
        ok = ok[:n]
        real = clip_stats(track["weights"][:n][ok], track["angles"][:n][ok], speech)
        ours = clip_stats(ours_w[:n], ours_a[:n], speech)
        real["clip"] = ours["clip"] = clip
        pair = sets["heldout" if i % 2 else "calibration"]
        pair[0].append(real)
        pair[1].append(ours)
    result = {name: summarize(*pair) for name, pair in sets.items() if pair[0]}
    result["passed"] = result["heldout"]["passed"] if "heldout" in result else False
    result["per_clip"] = {name: {"real": pair[0], "ours": pair[1]} for name, pair in sets.items()}
    return result


def side_by_side(animator, clip: str, track_dir: str | Path, video_dir: str | Path, out_mp4: str | Path,
                 strip_png: str | Path | None = None, size: int = 288) -> Path:
    """MP4 (with the clip's audio): the real video | the avatar driven by the real tracked weights and head
    pose | the avatar driven by our model + liveliness layer. ``strip_png``: five moments of it in one image."""
    import subprocess

    import imageio.v3 as iio
    from PIL import Image, ImageDraw

    from lsf_core.audio import load_audio
    from lsf_core.face.head_pose import posed_vertices
    from lsf_core.face.render import encode_mp4, frame_bounds, render_mesh

    video = Path(video_dir) / f"{clip}.mpg"
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True).stdout
    real_frames = np.frombuffer(raw, np.uint8).reshape(-1, 288, 360, 3)
    track = read_track(Path(track_dir) / f"{clip}.npz")
    frames = animator.animate(load_audio(video), 16000)
    n = min(len(frames), len(real_frames))
    rig = animator.rig
    to_rig = np.zeros((len(ARKIT_INDEX), len(rig.blendshape_names)), np.float32)
    for j, name in enumerate(rig.blendshape_names):
        if name in ARKIT_INDEX:
            to_rig[ARKIT_INDEX[name], j] = 1.0
    real_angles = track["angles"][:n] - np.nanmean(track["angles"][track["detected"]], 0)
    real_angles[~track["detected"][:n]] = 0.0
    real_v = posed_vertices(rig.vertices[None] + rig.offsets(track["weights"][:n] @ to_rig),
                            np.radians(real_angles), animator.head_pivot)
    ours_v = posed_vertices(rig.vertices[None] + np.stack([f.vertex_offsets for f in frames[:n]]),
                            np.stack([f.pose[:3] for f in frames[:n]]), animator.head_pivot)
    bounds = frame_bounds(np.concatenate([real_v[::10], ours_v[::10]]))
    labels = ("real (GRID s1, CC BY 4.0)", "avatar: real tracked weights + head", "avatar: ours (model + layer)")
    composite = []
    for i in range(n):
        panels = [np.asarray(Image.fromarray(real_frames[i]).resize((size * 360 // 288, size)))]
        for v in (real_v[i], ours_v[i]):
            panels.append(render_mesh(v, rig.faces, size, "front", rig.colors, bounds, supersample=1))
        img = Image.fromarray(np.concatenate(panels, 1))
        draw = ImageDraw.Draw(img)
        x = 0
        for label, p in zip(labels, panels):
            draw.text((x + 6, 4), label, fill=(255, 255, 255))
            x += p.shape[1]
        composite.append(np.asarray(img))
    out = encode_mp4(iter(composite), composite[0].shape[1], composite[0].shape[0], FPS, out_mp4, video)
    if strip_png is not None:
        picks = np.linspace(0, n - 1, 5).astype(int)
        iio.imwrite(strip_png, np.concatenate([composite[i][::2, ::2] for i in picks], 0))
    return out

