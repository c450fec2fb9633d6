"""3DMEAD-layout data for the ``paper`` preset: read it, check it, and write a tiny synthetic copy.

On-disk layout (as the LSF-Animation release reads it):

- ``ROOT/wav/<key>.wav``: speech (any rate; resampled to 16 kHz, downmixed to mono);
- ``ROOT/param/<key>.npy``: FLAME parameters per 25 fps frame, shape (T, 403) or (1, T, 403):
  columns 0:300 shape, 300:400 expression (the first 50 are used), 400:403 jaw axis-angle;
- ``<key>`` = ``<identity>_<sentence>_<emotion>_<intensity>``, e.g. ``M003_002_1_2``.

Splits are by speaker, in the release's identity order: the first 22 identities train, the next 5
validate, the last 5 (W011 W014 W015 W016 W018) test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lsf_core.audio import downmix, resample, to_float
from lsf_core.models.base import AUDIO_RATE, FPS, num_frames

IDENTITIES = ["W019", "W021", "W023", "W024", "W025", "W026", "W028", "W029",
              "M003", "M005", "M007", "M009", "M011", "M012", "M013", "M019",
              "M022", "M023", "M024", "M025", "M026", "M027", "M028", "M029",
              "M030", "M031", "W009", "W011", "W014", "W015", "W016", "W018"]
SPLITS = {"train": IDENTITIES[:22], "val": IDENTITIES[22:27], "test": IDENTITIES[27:]}
PARAM_WIDTH = 403
MAX_FRAME_MISMATCH = 3  # frames of disagreement between the wav's length and the parameter count we trim away


class MeadError(ValueError):
    """Missing, malformed or misaligned 3DMEAD data (the message names the file)."""


@dataclass
class MeadClip:
    key: str
    identity: str
    audio: np.ndarray   # (S,) float32 16 kHz
    motion: np.ndarray  # (T, 53) float32: expression 50 + jaw 3, FLAME units
    shape: np.ndarray   # (300,) float32 FLAME shape of the speaker


def read_params(path: Path) -> np.ndarray:
    """``param/<key>.npy`` -> (T, 403) float32."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MeadError(f"{path}: cannot read FLAME parameters ({exc})") from exc
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != PARAM_WIDTH or arr.shape[0] == 0:
        raise MeadError(f"{path}: expected FLAME parameters of shape (T, {PARAM_WIDTH}) or (1, T, {PARAM_WIDTH}) "
                        f"(shape 300, expression 100, jaw 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise MeadError(f"{path}: FLAME parameters contain NaN or inf")
    return arr.astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types; name the file
        raise MeadError(f"{path}: cannot read audio ({exc})") from exc
    if data.size == 0:
        raise MeadError(f"{path}: the file holds no samples")
    return resample(downmix(to_float(data, str(path))), rate, AUDIO_RATE).astype(np.float32)


def load_clip(root: Path, key: str) -> MeadClip:
    """One sequence, with audio and motion trimmed to the same number of 25 fps frames."""
    wav_path, param_path = root / "wav" / f"{key}.wav", root / "param" / f"{key}.npy"
    for p in (wav_path, param_path):
        if not p.is_file():
            raise MeadError(f"{p}: missing (sequence {key!r} needs both wav/{key}.wav and param/{key}.npy)")
    params, audio = read_params(param_path), read_wav(wav_path)
    frames = min(num_frames(audio.size), params.shape[0])
    if abs(num_frames(audio.size) - params.shape[0]) > MAX_FRAME_MISMATCH:
        raise MeadError(f"{param_path}: {params.shape[0]} frames but {wav_path.name} lasts "
                        f"{audio.size / AUDIO_RATE:.2f} s "
                        f"({num_frames(audio.size)} frames at {FPS} fps): audio and motion are misaligned")
    motion = np.concatenate([params[:frames, 300:350], params[:frames, 400:403]], axis=1)
    samples = frames * AUDIO_RATE // FPS
    audio = np.pad(audio[:samples], (0, max(0, samples - audio.size)))
    return MeadClip(key, key.split("_")[0], audio, motion, params[0, :300].copy())


class MeadDataset:
    """All sequences of one split (``train``/``val``/``test``/``all``), loaded into memory."""

    def __init__(self, root: str | Path, split: str = "train", identities: list[str] | None = None,
                 max_clips: int = 0):
        self.root = Path(root)
        if identities is None:
            if split != "all" and split not in SPLITS:
                raise MeadError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
            identities = IDENTITIES if split == "all" else SPLITS[split]
        if not (self.root / "param").is_dir():
            raise MeadError(f"{self.root / 'param'}: missing (a 3DMEAD root holds param/ and wav/)")
        keys = sorted(p.stem for p in (self.root / "param").glob("*.npy") if p.stem.split("_")[0] in identities)
        if max_clips:
            keys = keys[:max_clips]
        if not keys:
            raise MeadError(f"{self.root / 'param'}: no sequences of split {split!r} (identities {identities})")
        self.clips = [load_clip(self.root, k) for k in keys]
        self.identities = sorted({c.identity for c in self.clips})

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> MeadClip:
        return self.clips[i]


def write_synthetic(root: str | Path, identities: list[str] | None = None, sentences: int = 2,
                    seconds: float = 2.0, seed: int = 0) -> Path:
    """A tiny dataset in the exact 3DMEAD layout. Audio is a voiced buzz whose loudness follows a random
    syllable envelope; the motion follows that envelope (jaw opening and expression channels driven by it,
    plus a per-speaker expression offset and a fixed per-speaker shape), so it is learnable from audio."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    identities = identities or ["M003", "M005", "M028", "W011"]
    (root / "wav").mkdir(parents=True, exist_ok=True)
    (root / "param").mkdir(parents=True, exist_ok=True)
    mix = rng.standard_normal(50).astype(np.float32)
    for ident in identities:
        shape = 0.5 * rng.standard_normal(300).astype(np.float32)
        offset = 0.3 * rng.standard_normal(50).astype(np.float32)
        for s in range(sentences):
            frames = int(seconds * FPS)
            n = frames * AUDIO_RATE // FPS
            syll = np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * np.arange(frames) / FPS
                                  + rng.uniform(0, 2 * np.pi)), 0, None) ** 2
            env = np.interp(np.arange(n) / (AUDIO_RATE / FPS), np.arange(frames), syll)
            t = np.arange(n) / AUDIO_RATE
            f0 = rng.uniform(100, 220)
            buzz = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
            wav = 0.3 * env * buzz + 0.003 * rng.standard_normal(n)
            params = np.zeros((frames, PARAM_WIDTH), np.float32)
            params[:, :300] = shape
            params[:, 300:350] = offset + syll[:, None] * mix
            params[:, 400] = 0.3 * syll
            key = f"{ident}_{s:03d}_{s % 8}_{s % 3}"
            sf.write(str(root / "wav" / f"{key}.wav"), wav.astype(np.float32), AUDIO_RATE)
            np.save(root / "param" / f"{key}.npy", params[None])
    return root
