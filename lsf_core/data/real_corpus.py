"""Real clips (``lsf data track`` / ``import-rig`` NPZ) as training data beside the procedural corpus.

A real source is a folder of clip NPZ files. Each clip brings its per-channel ``mask`` (True where the value is a
measurement: a surely tracked frame and a channel the source measures), so the loss supervises only what the
source really measures (``lsf_core.training.realtime._loss``). Held-out clips (by sentence / take) are named by id
or by a folder of evaluation clips and are never loaded for training; loading a source whose every clip is held
out is an error, and the ids left out are reported.

Provenance and licence are kept per clip (``provenance()``) and written beside the trained model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES


@dataclass
class RealSource:
    """One folder of real clips in a training recipe."""

    dir: str = ""
    heldout: list[str] = field(default_factory=list)   # clip ids (file stems) never trained on
    heldout_dir: str = ""     # a folder of evaluation clips: its *.npz stems are held out too
    share: float = 1.0        # relative sampling share among the real sources
    gains: dict[str, float] = field(default_factory=dict)   # ARKit name -> scale of its targets (tracker -> corpus)
    min_std: float = 0.0      # channels whose std over the source's measured training frames is lower are dropped
    prefixes: list[str] = field(default_factory=list)   # supervise only ARKit names starting so (empty = all)


def heldout_ids(source: RealSource) -> set[str]:
    """Every clip id of ``source`` that must not be trained on."""
    ids = set(source.heldout)
    if source.heldout_dir:
        folder = Path(source.heldout_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"real source {source.dir}: heldout_dir {folder} is not a folder")
        ids |= {p.stem for p in folder.glob("*.npz")}
    return ids


def split_real(source: RealSource) -> tuple[list[Path], list[str]]:
    """(training clip paths, held-out ids present in the folder): by id, sorted; never a held-out id in training."""
    folder = Path(source.dir)
    paths = sorted(folder.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"real source {folder}: no clip NPZ files (make them with lsf data track / import-rig)")
    held = heldout_ids(source)
    train = [p for p in paths if p.stem not in held]
    if not train:
        raise ValueError(f"real source {folder}: every clip is held out; nothing to train on")
    return train, sorted(p.stem for p in paths if p.stem in held)


def arkit_targets(clip: dict, gains: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, 52) float32 targets and (T, 52) float32 mask in ARKit order from a loaded clip (``load_track``);
    ``gains`` scales named channels (clipped to 0..1), e.g. to bring a tracker's range to the corpus's."""
    weights, mask = clip["weights"], clip["mask"]
    if "frame_mask" in clip:
        mask = mask & np.asarray(clip["frame_mask"], bool)[:, None]
    target = np.zeros((len(weights), len(ARKIT_NAMES)), np.float32)
    m = np.zeros(target.shape, np.float32)
    for j, name in enumerate(clip["names"]):
        k = ARKIT_INDEX.get(str(name))
        if k is not None:
            target[:, k] = np.where(mask[:, j], weights[:, j], 0.0)
            m[:, k] = mask[:, j]
    for name, gain in (gains or {}).items():
        if name not in ARKIT_INDEX:
            raise ValueError(f"gains: {name!r} is not an ARKit blendshape name")
        target[:, ARKIT_INDEX[name]] = np.clip(target[:, ARKIT_INDEX[name]] * gain, 0.0, 1.0)
    return target, m


class RealClipSet:
    """Training clips of several real sources, cached in memory; the same fields as the procedural ClipSet plus
    ``masks`` (per frame and channel), ``source_of`` (index into ``sources``) and per-clip provenance/licence."""

    def __init__(self, sources: list[RealSource]):
        from lsf_core.data.track import load_track

        self.sources = sources
        self.ids, self.audio, self.targets, self.masks, self.source_of = [], [], [], [], []
        self.meta, self.heldout, self.dropped = [], {}, {}
        for s, src in enumerate(sources):
            paths, held = split_real(src)
            self.heldout[src.dir] = held
            first = len(self.ids)
            for p in paths:
                z = load_track(p)
                if int(z["sample_rate"]) != 16000 or float(z["fps"]) != 25.0:
                    raise ValueError(f"{p}: {int(z['sample_rate'])} Hz / {float(z['fps'])} fps; 16000 Hz and 25 fps "
                                     "expected")
                target, mask = arkit_targets(z, src.gains)
                self.ids.append(p.stem)
                self.audio.append(np.asarray(z["audio"], np.float32))
                self.targets.append(target)
                self.masks.append(mask)
                self.source_of.append(s)
                self.meta.append({"id": p.stem, "file": str(p),
                                  **{k: str(z[k]) for k in ("source", "speaker", "provenance", "licence", "tracker")
                                     if k in z},
                                  "measured_channels": int(mask.any(0).sum()),
                                  "measured_frames": int(mask.any(1).sum()), "frames": len(mask)})
            self.dropped[src.dir] = self._drop(src, first)
        self._members = [[i for i, k in enumerate(self.source_of) if k == s] for s in range(len(sources))]
        self._shares = np.array([s.share for s in sources], np.float64)
        self._shares /= self._shares.sum()

    def _drop(self, src: RealSource, first: int) -> list[str]:
        """Mask, in clips first..end, the channels outside ``src.prefixes`` and those that do not move (std <
        ``src.min_std``): a tracker that barely moves a channel (or a rig that never uses it) does not measure
        that the face keeps it still."""
        drop = {k for k, n in enumerate(ARKIT_NAMES) if src.prefixes and not n.startswith(tuple(src.prefixes))}
        if src.min_std > 0:
            t, m = np.concatenate(self.targets[first:]), np.concatenate(self.masks[first:]) > 0
            for k in range(len(ARKIT_NAMES)):
                if m[:, k].any() and t[m[:, k], k].std() < src.min_std:
                    drop.add(k)
        for i in range(first, len(self.ids)):
            self.masks[i][:, sorted(drop)] = 0
        return [ARKIT_NAMES[k] for k in sorted(drop)]

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, rng: np.random.Generator) -> int:
        """A clip index: a source by its share, then a clip of it uniformly."""
        members = self._members[int(rng.choice(len(self._shares), p=self._shares))]
        return members[int(rng.integers(len(members)))]

    def provenance(self) -> dict:
        """Per source: folder, held-out ids, and each training clip's provenance and licence."""
        return {src.dir: {"heldout": self.heldout[src.dir], "heldout_dir": src.heldout_dir,
                          "heldout_ids_named": len(heldout_ids(src)), "share": src.share, "gains": src.gains,
                          "dropped": self.dropped[src.dir],
                          "clips": [m for m, k in zip(self.meta, self.source_of) if k == s]}
                for s, src in enumerate(self.sources)}
