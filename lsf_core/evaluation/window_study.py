"""``lsf window-study``: how far a clip-based model drifts when it runs on sliding windows.

The ``paper`` preset was trained on whole clips (global attention, InstanceNorm and audio normalisation
over the clip). Live, ``StreamingAnimator`` runs it on windows of ``window`` s of left context plus
``lookahead`` s of future, every ``hop``, cross-fading overlaps. This study feeds the same audio both
ways and reports, per (window, look-ahead) setting, the RMS difference between streamed and whole-clip
output relative to the clip's motion RMS (RMS displacement from neutral). Vertex offsets are compared
when the animator has them (a rig, or a FLAME model for FLAME-output models); otherwise the model's
output parameters are (``space`` in the result says which).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.audio import MODEL_RATE


@dataclass(frozen=True)
class WindowSetting:
    window: float      # s of left context
    lookahead: float   # s of future audio

    @classmethod
    def parse(cls, text: str) -> WindowSetting:
        """``"2:0.08"`` -> window 2 s, look-ahead 0.08 s."""
        try:
            window, lookahead = (float(x) for x in text.split(":"))
        except ValueError as err:
            raise ValueError(f"window setting {text!r}: expected WINDOW:LOOKAHEAD in seconds, e.g. 2:0.08") from err
        return cls(window, lookahead)


def _tracks(frames) -> tuple[np.ndarray, str]:
    """Per-frame motion from Frames: vertex offsets when there are any, else the model's outputs."""
    offsets = np.stack([f.vertex_offsets for f in frames]).reshape(len(frames), -1)
    if np.abs(offsets).max() > 0:
        return offsets, "vertices"
    if frames[0].flame is not None:
        return np.stack([f.flame for f in frames]), "flame_params"
    return np.stack([f.blendshapes for f in frames]), "blendshapes"


def compare(animator, audio: np.ndarray, chunk: float = 0.04) -> dict:
    """Stream ``audio`` (16 kHz) through ``animator`` in ``chunk``-second pieces and compare with its
    whole-clip output: relative RMS error and the largest per-frame error, both / motion RMS."""
    whole, space = _tracks(animator.animate(audio, MODEL_RATE))
    animator.reset()
    frames, step = [], max(1, int(chunk * MODEL_RATE))
    for i in range(0, audio.size, step):
        frames += animator.push(audio[i:i + step], MODEL_RATE, i / MODEL_RATE)
    frames += animator.flush()
    streamed, _ = _tracks(frames)
    n = min(len(whole), len(streamed))
    if n == 0:
        raise ValueError("the clip produced no frames")
    motion_rms = float(np.sqrt(np.mean(whole[:n] ** 2)))
    err = streamed[:n] - whole[:n]
    frame_err = np.sqrt(np.mean(err ** 2, axis=1))
    scale = motion_rms if motion_rms > 0 else 1.0
    return {"frames": n, "space": space, "motion_rms": motion_rms,
            "relative_rms_error": float(np.sqrt(np.mean(err ** 2)) / scale),
            "relative_max_frame_error": float(frame_err.max() / scale)}


def window_study(model, clips: list[np.ndarray], settings: list[WindowSetting], hop: float = 0.04,
                 flame_model: str = "", device: str = "auto", progress: bool = True) -> list[dict]:
    """One row per setting: the mean over clips of ``compare``'s figures, and the worst clip."""
    from tqdm import tqdm

    from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

    rows = []
    for s in tqdm(settings, desc="window settings", unit="setting", disable=not progress):
        cfg = StreamConfig(rate=25.0, window=s.window, lookahead=s.lookahead, hop=hop, max_queue=0.0,
                           flame_model=flame_model, device=device)
        animator = StreamingAnimator(cfg, model=model)
        per_clip = [compare(animator, clip, chunk=hop) for clip in clips]
        rel = [c["relative_rms_error"] for c in per_clip]
        rows.append({"window_s": s.window, "lookahead_s": s.lookahead, "hop_s": hop,
                     "algorithmic_latency_ms": round(1000 * (s.lookahead + hop), 1),
                     "space": per_clip[0]["space"], "relative_rms_error_mean": float(np.mean(rel)),
                     "relative_rms_error_worst_clip": float(np.max(rel)),
                     "relative_max_frame_error": float(max(c["relative_max_frame_error"] for c in per_clip)),
                     "clips": len(per_clip)})
    return rows


def plot(rows: list[dict], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for look in sorted({r["lookahead_s"] for r in rows}):
        sel = sorted((r for r in rows if r["lookahead_s"] == look), key=lambda r: r["window_s"])
        ax.plot([r["window_s"] for r in sel], [100 * r["relative_rms_error_mean"] for r in sel], "o-",
                label=f"look-ahead {1000 * look:.0f} ms")
    ax.axhline(10.0, color="grey", ls="--", lw=1, label="10 % of motion RMS")
    ax.set_xlabel("left context window (s)")
    ax.set_ylabel("error vs whole clip (% of motion RMS)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
