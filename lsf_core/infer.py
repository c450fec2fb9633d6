"""Animate an audio file offline and write the result as NPZ.

NPZ layout (shared by ``lsf infer``, the ROS runner's recordings and ``lsf render``):
``fps`` (), ``times`` (T,) s, ``blendshape_names`` (K,), ``blendshapes`` (T, K) in 0..1,
``vertex_offsets`` (T, V, 3) metres, ``faces`` (F, 3), ``neutral`` (V, 3) metres, and ``flame`` (T, 53)
when the model outputs FLAME parameters.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lsf_core.streaming import Frame, StreamConfig, StreamingAnimator


def frames_to_arrays(frames: list[Frame], animator: StreamingAnimator, fps: float) -> dict[str, np.ndarray]:
    out = {
        "fps": np.float32(fps),
        "times": np.array([f.stamp for f in frames], np.float64),
        "blendshape_names": np.array(animator.blendshape_names),
        "blendshapes": np.stack([f.blendshapes for f in frames]).astype(np.float32),
        "vertex_offsets": np.stack([f.vertex_offsets for f in frames]).astype(np.float32),
        "faces": np.asarray(animator.rig.faces, np.int32),
        "neutral": np.asarray(animator.rig.vertices, np.float32),
    }
    if frames and frames[0].flame is not None:
        out["flame"] = np.stack([f.flame for f in frames]).astype(np.float32)
    return out


def infer_file(audio_path: str | Path, model: str = "realtime", neutral_mesh: str = "", rate: float | None = None,
               flame_model: str = "", animator: StreamingAnimator | None = None) -> dict[str, np.ndarray]:
    """Audio file of any common format, rate and channel count -> the NPZ arrays above."""
    import soundfile as sf

    from lsf_core.audio import AudioError, load_audio

    if animator is None:
        cfg = StreamConfig(model=model, neutral_mesh=neutral_mesh, flame_model=flame_model, rate=rate or 25.0)
        animator = StreamingAnimator(cfg)
    elif rate:
        animator.set_rate(rate)
    try:
        data, sr = sf.read(str(audio_path), dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - formats soundfile cannot read go through ffmpeg at 16 kHz
        data, sr = load_audio(audio_path)[:, None], 16000
    if data.size == 0:
        raise AudioError(f"{audio_path}: the file holds no samples")
    frames = animator.animate(data, sr)
    return frames_to_arrays(frames, animator, animator.config.rate)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", help="audio file (wav, flac, ogg, mp3, ...; any rate and channel count)")
    p.add_argument("-o", "--out", default=None, help="output NPZ (default: AUDIO with .npz)")
    p.add_argument("--model", default="realtime", help="preset with shipped weights, or a .safetensors model")
    p.add_argument("--neutral-mesh", default="", help="rig file (.npz/.obj/.ply/.glb); default: our avatar")
    p.add_argument("--flame-model", default="", help="FLAME model file, for models that output FLAME")
    p.add_argument("--rate", type=float, default=25.0, help="output frames per second (25..120)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.audio).with_suffix(".npz")
    arrays = infer_file(args.audio, args.model, args.neutral_mesh, args.rate, args.flame_model)
    np.savez_compressed(out, **arrays)
    t = arrays["blendshapes"].shape[0]
    print(f"wrote {out}: {t} frames at {args.rate:g} fps, {arrays['vertex_offsets'].shape[1]} vertices, "
          f"{len(arrays['blendshape_names'])} blendshapes")
    return 0
