"""``lsf data import-rig``: captured or animator-made motion -> the real-motion clip NPZ (``lsf_core.data.track``).

Two inputs, each paired with its audio (any file ``lsf_core.audio.load_audio`` reads, video included):

- rig-channel arrays (``.npy`` of shape (frames, channels) at ``fps``) with a mapping file (YAML, e.g.
  ``config/rig_maps/facegood_arkit.yaml``): ``rig_names`` (the array's column names, in order), ``rig_fps``,
  ``combine`` (``max`` or ``sum``, for several rig channels feeding one ARKit name) and ``channels``
  (ARKit name -> list of rig channel names). ARKit channels the mapping does not list are masked;
- Live Link Face CSV takes (``Timecode, BlendShapeCount, EyeBlinkLeft, ..., TongueOut, HeadYaw, HeadPitch,
  HeadRoll, ...``): every ARKit column (``TongueOut`` may be absent: then masked), head angles into ``head_pose``.
  The rate is given (``fps``) and checked against the timecode's frame field.

Motion is resampled onto the model grid (frame k at ``k / 25`` s after the first audio sample, ``offset`` s
shifts the motion against the audio). Motion and audio must last the same time (within ``max(0.2 s, 2 %)``);
a mismatch usually means a wrong frame rate, and the error says which rate would fit.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES, canonical_name
from lsf_core.audio import MODEL_RATE, load_audio
from lsf_core.models.base import num_frames

COMBINE = {"max": np.max, "sum": np.sum}
LLF_HEAD = ("HeadYaw", "HeadPitch", "HeadRoll")


class RigImportError(ValueError):
    """Motion that cannot be imported; the message names the file and what is wrong."""


@dataclass
class RigMapping:
    name: str
    rig_names: list[str]
    rig_fps: float
    combine: str
    channels: dict[str, list[str]]      # ARKit name -> rig channel names

    def matrix(self) -> list[tuple[int, list[int]]]:
        """(ARKit index, rig column indices) per mapped ARKit channel."""
        col = {n: i for i, n in enumerate(self.rig_names)}
        return [(ARKIT_INDEX[a], [col[r] for r in rigs]) for a, rigs in self.channels.items()]


def load_mapping(path: str | Path) -> RigMapping:
    """Read and check a rig mapping YAML (every name resolvable, ARKit names canonical)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RigImportError(f"{path}: cannot read the mapping ({err})") from err
    if not isinstance(data, dict):
        raise RigImportError(f"{path}: a mapping file is a YAML mapping")
    missing = [k for k in ("rig_names", "rig_fps", "channels") if k not in data]
    if missing:
        raise RigImportError(f"{path}: missing key(s) {', '.join(missing)}")
    rig_names = [str(n) for n in data["rig_names"]]
    combine = str(data.get("combine", "max"))
    if combine not in COMBINE:
        raise RigImportError(f"{path}: combine {combine!r} is not one of {', '.join(COMBINE)}")
    channels: dict[str, list[str]] = {}
    for name, rigs in (data["channels"] or {}).items():
        arkit = canonical_name(str(name))
        if arkit not in ARKIT_INDEX:
            raise RigImportError(f"{path}: channels: {name!r} is not an ARKit name")
        rigs = [str(r) for r in (rigs if isinstance(rigs, list) else [rigs])]
        unknown = [r for r in rigs if r not in rig_names]
        if unknown:
            raise RigImportError(f"{path}: channels: {name}: rig channel(s) {', '.join(unknown)} not in rig_names")
        channels[arkit] = rigs
    if not channels:
        raise RigImportError(f"{path}: no channels mapped")
    return RigMapping(str(data.get("name", path.stem)), rig_names, float(data["rig_fps"]), combine, channels)


def check_duration(source: str | Path, frames: int, fps: float, audio_s: float) -> None:
    """Raise when ``frames`` at ``fps`` does not last as long as the audio (the message suggests the fitting rate)."""
    motion_s = frames / fps
    if abs(motion_s - audio_s) > max(0.2, 0.02 * audio_s):
        raise RigImportError(f"{source}: {frames} frames at {fps:g} fps last {motion_s:.2f} s but the audio lasts "
                           f"{audio_s:.2f} s (mismatched lengths, or a wrong frame rate: {frames / audio_s:.1f} fps "
                           f"would fit)")


def to_grid(values: np.ndarray, fps: float, n: int, model_fps: float, offset: float = 0.0) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """(N, C) motion at ``fps`` -> (n, C) at model frames ``k / model_fps`` (linear) and a (n,) mask of the model
    frames inside the motion."""
    src_t = np.arange(len(values)) / fps + offset
    t = np.arange(n) / model_fps
    out = np.stack([np.interp(t, src_t, values[:, c]) for c in range(values.shape[1])], 1)
    inside = (t >= src_t[0] - 1e-6) & (t <= src_t[-1] + 1e-6)
    out[~inside] = 0.0
    return out.astype(np.float32), inside


def import_rig_array(array_path: str | Path, audio_path: str | Path, mapping: RigMapping, fps: float | None = None,
                     model_fps: float = 25.0, offset: float = 0.0) -> dict[str, np.ndarray]:
    """A rig-channel array + its audio -> the clip fields (``lsf_core.data.track.TRACK_FIELDS`` subset)."""
    try:
        with warnings.catch_warnings():   # FACEGOOD's arrays were written by Python 2 (numpy warns, reads them fine)
            warnings.simplefilter("ignore", UserWarning)
            rig = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RigImportError(f"{array_path}: not a readable .npy array ({err})") from err
    if rig.ndim != 2 or rig.shape[1] != len(mapping.rig_names):
        raise RigImportError(f"{array_path}: shape {rig.shape}, the mapping {mapping.name!r} expects (frames, "
                           f"{len(mapping.rig_names)})")
    if not np.isfinite(rig).all():
        raise RigImportError(f"{array_path}: the array holds NaN or Inf")
    fps = float(fps or mapping.rig_fps)
    audio = load_audio(audio_path)
    check_duration(array_path, len(rig), fps, audio.size / MODEL_RATE)
    arkit = np.zeros((len(rig), len(ARKIT_NAMES)), np.float64)
    measured = np.zeros(len(ARKIT_NAMES), bool)
    for a, cols in mapping.matrix():
        arkit[:, a] = COMBINE[mapping.combine](rig[:, cols], axis=1)
        measured[a] = True
    return _clip(audio, np.clip(arkit, 0.0, 1.0), measured, None, fps, model_fps, offset,
                 f"rig import: {mapping.name}")


def read_live_link_csv(path: str | Path, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Live Link Face CSV take -> (N, 52) weights, (52,) measured flags, (N, 3) head yaw, pitch, roll."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise RigImportError(f"{path}: cannot read the CSV ({err})") from err
    if len(rows) < 2:
        raise RigImportError(f"{path}: no frames (header and at least one row expected)")
    header = [h.strip() for h in rows[0]]
    cols = {canonical_name(h): i for i, h in enumerate(header)}
    needed = [n for n in ARKIT_NAMES if n != "tongueOut"]
    missing = [n[0].upper() + n[1:] for n in needed if n not in cols]
    if "Timecode" not in header:
        missing.insert(0, "Timecode")
    if missing:
        raise RigImportError(f"{path}: missing column(s) {', '.join(missing)} (a Live Link Face CSV take expected)")
    body = [r for r in rows[1:] if r and any(c.strip() for c in r)]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise RigImportError(f"{path}: row(s) {', '.join(map(str, bad[:5]))} have a different number of fields "
                           f"than the header ({len(header)})")
    frame_field = np.array([_timecode_frame(r[header.index("Timecode")], path) for r in body])
    if frame_field.max() >= fps:
        raise RigImportError(f"{path}: the timecode counts frames up to {frame_field.max()}, so the take is not "
                           f"{fps:g} fps (wrong fps)")
    try:
        values = np.array([[float(r[cols[n]]) if n in cols else 0.0 for n in ARKIT_NAMES] for r in body])
        head = np.array([[float(r[header.index(h)]) if h in header else 0.0 for h in LLF_HEAD] for r in body])
    except ValueError as err:
        raise RigImportError(f"{path}: a value is not a number ({err})") from err
    measured = np.array([n in cols for n in ARKIT_NAMES])
    return np.clip(values, 0.0, 1.0), measured, head


def _timecode_frame(text: str, path: Path) -> int:
    parts = text.strip().split(":")
    if len(parts) != 4:
        raise RigImportError(f"{path}: timecode {text!r} is not HH:MM:SS:FF(.sub)")
    return int(float(parts[3]))


def import_live_link(csv_path: str | Path, audio_path: str | Path, fps: float, model_fps: float = 25.0,
                     offset: float = 0.0) -> dict[str, np.ndarray]:
    """A Live Link Face CSV take + its audio (the take's .mov or a WAV) -> the clip fields."""
    weights, measured, head = read_live_link_csv(csv_path, fps)
    audio = load_audio(audio_path)
    check_duration(csv_path, len(weights), fps, audio.size / MODEL_RATE)
    return _clip(audio, weights, measured, head, fps, model_fps, offset, "Live Link Face CSV (ARKit)")


def _clip(audio, weights, measured, head, fps, model_fps, offset, tracker) -> dict[str, np.ndarray]:
    n = num_frames(audio.size, model_fps, MODEL_RATE)
    w, inside = to_grid(weights, fps, n, model_fps, offset)
    pose = np.zeros((n, 6), np.float32)
    if head is not None:
        pose[:, :3], _ = to_grid(head, fps, n, model_fps, offset)
    mask = inside[:, None] & measured[None, :]
    return {"audio": audio.astype(np.float32), "sample_rate": np.int64(MODEL_RATE), "fps": np.float64(model_fps),
            "names": np.array(ARKIT_NAMES), "weights": np.where(mask, w, 0.0).astype(np.float32), "mask": mask,
            "frame_mask": inside, "head_pose": pose, "video_fps": np.float64(fps), "tracker": np.array(tracker)}


def save_import(path: str | Path, fields: dict[str, np.ndarray], source: str, speaker: str, provenance: str,
                licence: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **fields, source=np.array(source), speaker=np.array(speaker),
                        provenance=np.array(provenance), licence=np.array(licence))
    return path


def pair_audio(motion: Path, audio_dir: Path) -> Path:
    """The audio file in ``audio_dir`` whose stem ends the motion file's stem (longest match wins):
    ``bs_value_1114_2_01.npy`` -> ``1114_2_01.wav``."""
    cands = [a for a in audio_dir.iterdir() if a.is_file() and a.suffix.lower() != motion.suffix.lower()
             and motion.stem.endswith(a.stem)] if audio_dir.is_dir() else []
    if not cands:
        raise RigImportError(f"{motion}: no audio in {audio_dir} whose name ends its name")
    return max(cands, key=lambda a: len(a.stem))

