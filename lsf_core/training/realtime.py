"""Train the ``realtime`` preset on a corpus made by ``lsf data make``.

Targets are ARKit blendshape curves at 25 fps; the loss is L1 on the weights (mouth channels
weighted up), L1 on their frame-to-frame velocity, L2 on the vertex offsets they produce on the
default avatar's lip, jaw and brow vertices and, with ``corr_weight``, 1 - Pearson r of each mouth channel
over each clip crop (scale-free: for channels whose sources disagree on scale). Real clips (``real``: tracked
or imported NPZ folders, ``lsf_core.data.real_corpus``) can be mixed in: each brings a per-frame, per-channel
mask and the loss supervises only the channels and frames it measures. Each clip is shown with a random avatar
identity whose face shape sets a speaking style (jaw amplitude, smile), so the identity path has something to learn.
Audio is augmented on the fly. Checkpoints are resumable; the final model is one .safetensors file.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.config import dump_config
from lsf_core.data.real_corpus import RealClipSet, RealSource, heldout_ids
from lsf_core.models.base import SAMPLES_PER_FRAME

CLOSE = ARKIT_INDEX["mouthClose"]
MOUTH = [n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth", "cheekPuff", "tongue"))]
MOUTH_IDX = [ARKIT_INDEX[n] for n in MOUTH]


@dataclass
class TrainConfig:
    data: str = "data/corpus"
    out: str = "runs/realtime"
    preset: str = "realtime"
    model: dict = field(default_factory=dict)       # overrides of the preset's config
    init: str = ""                # start from this model file's weights and feature statistics (fine-tuning)
    steps: int = 6000
    batch: int = 16
    crop_seconds: float = 4.0
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200
    mouth_weight: float = 3.0
    velocity_weight: float = 2.0
    vertex_weight: float = 200.0
    closure_weight: float = 0.0   # extra weight of frames whose target has the lips closed (mouthClose >= 0.15)
    corr_weight: float = 0.0      # weight of (1 - Pearson r) per clip and mouth channel that moves in the crop
    corr_min_std: float = 0.01    # a channel "moves in the crop" when its target's std there is at least this
    augment: float = 0.8          # probability that a clip is augmented
    identities: int = 64          # avatar identities sampled during training
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 500
    validate_every: int = 500
    real: list[RealSource] = field(default_factory=list)   # real-clip folders with their held-out ids
    real_fraction: float = 0.0    # probability that a batch item is a real clip (when ``real`` is set)


def identity_style(identity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Speaking style tied to face shape (a synthetic rule of this corpus): the first shape
    coefficient scales jaw opening by 0.8..1.2, the second adds up to 0.1 of smile."""
    out = targets.copy()
    gain = 0.8 + 0.4 / (1.0 + math.exp(-float(identity[0])))
    smile = 0.1 / (1.0 + math.exp(-float(identity[1]))) if identity.size > 1 else 0.0
    for name in ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight"):
        out[:, ARKIT_INDEX[name]] *= gain
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        out[:, ARKIT_INDEX[name]] += smile
    return np.clip(out, 0.0, 1.0)


class ClipSet:
    """Clips of one split, cached in memory (the corpus is a few hundred MB at most)."""

    def __init__(self, root: Path, split: str):
        import soundfile as sf

        from lsf_core.data.dataset import list_split, load_clip

        self.ids = list_split(root, split)
        if not self.ids:
            raise ValueError(f"{root}: split {split!r} is empty")
        self.audio, self.targets = [], []
        for cid in self.ids:
            clip = load_clip(root, cid)
            wav, sr = sf.read(str(root / "clips" / f"{cid}.wav"), dtype="float32")
            if sr != 16000:
                raise ValueError(f"{root}/clips/{cid}.wav: expected 16 kHz, got {sr}")
            self.audio.append(wav if wav.ndim == 1 else wav.mean(1))
            self.targets.append(np.asarray(clip["blendshapes"], np.float32))

    def __len__(self) -> int:
        return len(self.ids)


def _crop(audio: np.ndarray, target: np.ndarray, frames: int, rng: np.random.Generator,
          channel_mask: np.ndarray | None = None):
    """A random crop of ``frames`` frames: audio, targets and a (frames, 52) mask (0 on padding and, with
    ``channel_mask``, where the clip does not measure a channel)."""
    t = target.shape[0]
    if t > frames:
        s = int(rng.integers(0, t - frames + 1))
    else:
        s = 0
    a = audio[s * SAMPLES_PER_FRAME:(s + frames) * SAMPLES_PER_FRAME]
    y = target[s:s + frames]
    a = np.pad(a, (0, frames * SAMPLES_PER_FRAME - a.size))
    mask = np.zeros((frames, target.shape[1]), np.float32)
    mask[: y.shape[0]] = 1 if channel_mask is None else channel_mask[s:s + frames]
    y = np.pad(y, ((0, frames - y.shape[0]), (0, 0)))
    return a, y, mask


def _feature_stats(model, clips: ClipSet, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    idx = np.linspace(0, len(clips) - 1, min(n, len(clips))).astype(int)
    with torch.no_grad():
        mels = torch.cat([model.logmel(torch.from_numpy(clips.audio[i]).unsqueeze(0))[0] for i in idx])
    return mels.mean(0), mels.std(0).clamp(min=1e-3)


def train(cfg: TrainConfig, resume: bool = True, log_every: int = 50) -> Path:
    from tqdm import tqdm

    from lsf_core.data.augment import augment
    from lsf_core.face.avatar import IDENTITY_DIM, make_avatar
    from lsf_core.models.registry import build_model, load_model, save_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    root, out = Path(cfg.data), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "train.yaml")
    train_set, val_set = ClipSet(root, "train"), ClipSet(root, "val")
    real_set = RealClipSet(cfg.real) if cfg.real and cfg.real_fraction > 0 else None
    if real_set is not None:
        (out / "real_provenance.json").write_text(json.dumps(real_set.provenance(), indent=1))
        print(f"{len(real_set)} real training clips; held-out ids never loaded: "
              + ", ".join(f"{s.dir} {len(heldout_ids(s))}" for s in cfg.real))
    model = build_model(cfg.preset, {"identity_dim": IDENTITY_DIM, **cfg.model})
    if cfg.init:
        model.load_state_dict(load_model(cfg.init).state_dict())
        print(f"starting from the weights of {cfg.init}")
    else:
        mean, std = _feature_stats(model, train_set)
        model.feat_mean.copy_(mean)
        model.feat_std.copy_(std)

    # identities: shape vectors and the lip/jaw/brow vertex deltas of each avatar
    ids = [make_avatar(i + 1) for i in range(cfg.identities)] if cfg.identities else [make_avatar(None)]
    ident = torch.tensor(np.stack([r.identity for r in ids]), dtype=torch.float32)
    rig0 = ids[0]
    region = np.unique(np.concatenate([rig0.regions[k] for k in ("lips", "jaw", "upper_face") if k in rig0.regions]))
    region = region[:: max(1, region.size // 600)]
    to_rig = np.zeros((len(ARKIT_NAMES), len(rig0.blendshape_names)), np.float32)
    for j, n in enumerate(rig0.blendshape_names):
        if n in ARKIT_INDEX:
            to_rig[ARKIT_INDEX[n], j] = 1
    deltas = torch.tensor(np.stack([to_rig @ r.deltas[:, region].reshape(len(r.blendshape_names), -1) for r in ids]))

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    step, history = 0, []
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
        rng = np.random.default_rng(cfg.seed + step)
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
        print(f"resumed from {ckpt} at step {step}")

    w = torch.ones(len(ARKIT_NAMES))
    w[MOUTH_IDX] = cfg.mouth_weight
    frames = int(cfg.crop_seconds * 25)
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train realtime", unit="step")
    t_start, running = time.time(), []
    while step < cfg.steps:
        batch_a, batch_y, batch_m, batch_i = [], [], [], []
        for _ in range(cfg.batch):
            real = real_set is not None and rng.random() < cfg.real_fraction
            if real:
                j = real_set.sample(rng)
                a, y, m = _crop(real_set.audio[j], real_set.targets[j], frames, rng, real_set.masks[j])
            else:
                j = int(rng.integers(len(train_set)))
                a, y, m = _crop(train_set.audio[j], train_set.targets[j], frames, rng)
            if rng.random() < cfg.augment:
                a = augment(a, rng)[: a.size]
                a = np.pad(a, (0, frames * SAMPLES_PER_FRAME - a.size))
            i = int(rng.integers(len(ids)))
            batch_a.append(a)
            batch_y.append(y if real else identity_style(ids[i].identity, y))   # the style rule is synthetic
            batch_m.append(m)
            batch_i.append(i)
        audio = torch.tensor(np.stack(batch_a))
        target = torch.tensor(np.stack(batch_y))
        mask = torch.tensor(np.stack(batch_m))
        idx = torch.tensor(batch_i)
        pred = model(audio, ident[idx])
        loss, parts = _loss(pred, target, mask, w, deltas[idx], cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        running.append(parts)
        bar.update(1)
        if step % log_every == 0:
            avg = {k: float(np.mean([p[k] for p in running])) for k in running[0]}
            running = []
            bar.set_postfix(loss=f"{avg['total']:.4f}", l1=f"{avg['l1']:.4f}")
            history.append({"step": step, **avg, "elapsed_s": round(time.time() - t_start, 1)})
        if step % cfg.validate_every == 0 or step == cfg.steps:
            history.append({"step": step, **validate(model, val_set)})
            model.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step}, ckpt)
            (out / "history.json").write_text(json.dumps(history, indent=1))
    bar.close()
    model.eval()
    path = save_model(model, out / "model.safetensors",
                      extra={"trained_steps": str(step), "data": str(root)})
    print(f"wrote {path}")
    return path


def _loss(pred, target, mask, w, deltas, cfg: TrainConfig):
    """Masked loss: ``mask`` (B, T, 52) is 0 where a frame is padding or a channel is not measured; those
    entries get no gradient and do not change the loss (velocity needs both frames, the vertex term uses the
    measured channels of a frame only)."""
    measured = (mask > 0).to(pred.dtype)
    if cfg.closure_weight:   # closures are brief: without extra weight the model blurs them away
        closed = (target[..., CLOSE:CLOSE + 1] >= 0.15) * measured[..., CLOSE:CLOSE + 1]
        mask = mask * (1.0 + cfg.closure_weight * closed)
    wm = w * mask
    l1 = ((pred - target).abs() * wm).sum() / wm.sum().clamp(min=1e-6)
    vel = ((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).abs()
    wv = wm[:, 1:] * measured[:, :-1]
    lv = (vel * wv).sum() / wm.sum().clamp(min=1e-6)
    dv = torch.einsum("btk,bkv->btv", (pred - target) * measured, deltas)
    frame_w = mask.amax(-1, keepdim=True)
    lvert = (dv.pow(2) * frame_w).sum() / (frame_w.sum().clamp(min=1e-6) * dv.shape[-1])
    total = l1 + cfg.velocity_weight * lv + cfg.vertex_weight * lvert
    parts = {"total": total, "l1": l1, "vel": lv, "vert": lvert}
    if cfg.corr_weight:
        parts["corr"] = _corr_loss(pred[..., MOUTH_IDX], target[..., MOUTH_IDX], measured[..., MOUTH_IDX],
                                   min_std=cfg.corr_min_std)
        total = total + cfg.corr_weight * parts["corr"]
        parts["total"] = total
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _corr_loss(pred, target, measured, min_std: float, min_frames: int = 10):
    """Mean (1 - Pearson r) over (clip, channel) pairs whose target moves in the crop (std >= ``min_std``,
    ``TrainConfig.corr_min_std``, over at least ``min_frames`` measured frames): the shape of a channel's motion,
    whatever its scale. An L1 loss on a channel that sources scale differently, or that is only partly predictable,
    settles near a constant; this term rewards following the real curve's rises and falls. Unmeasured entries get
    no gradient."""
    n = measured.sum(1)
    mean_p = (pred * measured).sum(1) / n.clamp(min=1)
    mean_t = (target * measured).sum(1) / n.clamp(min=1)
    dp = (pred - mean_p[:, None]) * measured
    dt = (target - mean_t[:, None]) * measured
    var_t = dt.pow(2).sum(1)
    ok = ((n >= min_frames) & (var_t >= min_std ** 2 * n)).to(pred.dtype)
    r = (dp * dt).sum(1) / (dp.pow(2).sum(1) * var_t + 1e-8).sqrt()
    return ((1 - r) * ok).sum() / ok.sum().clamp(min=1)


def validate(model, clips: ClipSet, max_clips: int = 64) -> dict:
    """Mean L1 over the validation clips and the jawOpen correlation with the targets."""
    model.eval()
    errs, jp, jt = [], [], []
    with torch.no_grad():
        for a, y in list(zip(clips.audio, clips.targets))[:max_clips]:
            p = model(torch.from_numpy(a).unsqueeze(0))[0].numpy()[: len(y)]
            errs.append(np.abs(p - y[: len(p)]).mean())
            jp.append(p[:, ARKIT_INDEX["jawOpen"]])
            jt.append(y[: len(p), ARKIT_INDEX["jawOpen"]])
    jp_all, jt_all = np.concatenate(jp), np.concatenate(jt)
    corr = float(np.corrcoef(jp_all, jt_all)[0, 1]) if jt_all.std() > 0 and jp_all.std() > 0 else 0.0
    return {"val_l1": float(np.mean(errs)), "val_jaw_corr": corr}
