"""Real clips in the training mix (lsf_core.data.real_corpus, the masked loss of lsf_core.training.realtime):
masked channels and frames get no gradient and leave the loss unchanged, held-out clips are never loaded for
training, and a run mixing real clips with the procedural corpus records each clip's provenance and licence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.data.real_corpus import RealClipSet, RealSource, arkit_targets, split_real
from lsf_core.training.realtime import TrainConfig, _loss, train

K = len(ARKIT_NAMES)


def _write_clip(path, seconds=2.0, seed=0, masked=("tongueOut",), lost=(10, 14)):
    """A clip NPZ in the track/import format: noise audio, random weights, some channels and frames masked."""
    rng = np.random.default_rng(seed)
    t = int(seconds * 25)
    mask = np.ones((t, K), bool)
    for n in masked:
        mask[:, ARKIT_INDEX[n]] = False
    frame_mask = np.ones(t, bool)
    frame_mask[lost[0]:lost[1]] = False
    mask &= frame_mask[:, None]
    weights = np.where(mask, rng.uniform(0, 1, (t, K)), 0).astype(np.float32)
    np.savez(path, audio=rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32), sample_rate=16000, fps=25.0,
             names=np.array(ARKIT_NAMES), weights=weights, mask=mask, frame_mask=frame_mask,
             source=str(path), speaker="spk", provenance="github:example/repo@0123abc clips/*.mpg",
             licence="CC BY 4.0 (example)")


def test_masked_channels_get_no_gradient_and_do_not_change_the_loss():
    """Catches a loss term (L1, velocity, vertex, closure weighting) that reads a masked channel or frame."""
    gen = torch.Generator().manual_seed(0)
    b, t = 2, 12
    target = torch.rand(b, t, K, generator=gen)
    mask = torch.ones(b, t, K)
    masked_channels = [ARKIT_INDEX[n] for n in ("eyeBlinkLeft", "browInnerUp", "mouthClose")]
    mask[:, :, masked_channels] = 0
    mask[1, 5] = 0                                              # a lost frame
    deltas = torch.rand(b, K, 30, generator=gen) - 0.5
    w = torch.ones(K)
    w[:20] = 3.0
    cfg = TrainConfig(closure_weight=3.0)
    pred = torch.rand(b, t, K, generator=gen, requires_grad=True)
    loss, _ = _loss(pred, target, mask, w, deltas, cfg)
    loss.backward()
    masked = mask == 0
    assert float(pred.grad[masked].abs().max()) == 0.0
    assert float(pred.grad[~masked].abs().min()) >= 0.0 and float(pred.grad[~masked].abs().max()) > 0

    garbage = torch.where(masked, torch.rand(b, t, K, generator=gen), target)   # other values where unmeasured
    other, _ = _loss(pred.detach(), garbage, mask, w, deltas, cfg)
    assert torch.allclose(other, loss.detach(), rtol=1e-6)
    changed = target.clone()
    changed[0, 3, ARKIT_INDEX["jawOpen"]] += 0.5                 # a measured value does change it
    assert not torch.allclose(_loss(pred.detach(), changed, mask, w, deltas, cfg)[0], loss.detach())


def test_full_mask_gives_the_unmasked_loss():
    """Catches a change of the procedural corpus's loss (all channels measured) by the masking."""
    gen = torch.Generator().manual_seed(1)
    target, pred = torch.rand(1, 8, K, generator=gen), torch.rand(1, 8, K, generator=gen)
    deltas, w = torch.rand(1, K, 6, generator=gen), torch.ones(K)
    _, parts = _loss(pred, target, torch.ones(1, 8, K), w, deltas, TrainConfig())
    assert np.isclose(parts["l1"], float((pred - target).abs().mean()), rtol=1e-5)


def test_split_never_trains_on_heldout_ids(tmp_path):
    """Catches a held-out clip (by id or by the evaluation folder) leaking into the training clips."""
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    train_dir.mkdir()
    eval_dir.mkdir()
    for i, name in enumerate(["a1", "b2", "c3", "d4", "e5"]):
        _write_clip(train_dir / f"{name}.npz", seed=i)
    _write_clip(eval_dir / "b2.npz", seed=9)                    # the evaluation folder holds b2 ...
    src = RealSource(dir=str(train_dir), heldout=["d4"], heldout_dir=str(eval_dir))   # ... and d4 by id
    paths, held = split_real(src)
    assert [p.stem for p in paths] == ["a1", "c3", "e5"] and held == ["b2", "d4"]
    clips = RealClipSet([src])
    assert set(clips.ids) == {"a1", "c3", "e5"}
    rng = np.random.default_rng(0)
    assert {clips.ids[clips.sample(rng)] for _ in range(200)} == {"a1", "c3", "e5"}
    prov = clips.provenance()[str(train_dir)]
    assert prov["heldout"] == ["b2", "d4"]
    assert all(c["licence"] == "CC BY 4.0 (example)" and c["provenance"].startswith("github:") for c in prov["clips"])
    with pytest.raises(ValueError, match="every clip is held out"):
        split_real(RealSource(dir=str(train_dir), heldout=["a1", "c3", "d4", "e5"], heldout_dir=str(eval_dir)))
    with pytest.raises(FileNotFoundError, match="heldout_dir"):
        split_real(RealSource(dir=str(train_dir), heldout_dir=str(tmp_path / "missing")))


def test_targets_follow_names_and_frame_mask(tmp_path):
    """Catches columns put in the wrong ARKit slot or lost frames left supervised."""
    from lsf_core.data.track import load_track

    _write_clip(tmp_path / "x.npz", masked=("tongueOut", "jawForward"), lost=(3, 7))
    z = load_track(tmp_path / "x.npz")
    order = np.arange(K)[::-1]                                  # columns in another order
    z = {**z, "names": z["names"][order], "weights": z["weights"][:, order], "mask": z["mask"][:, order]}
    target, mask = arkit_targets(z)
    full = load_track(tmp_path / "x.npz")
    assert np.allclose(target, full["weights"]) and mask.dtype == np.float32
    assert mask[:, ARKIT_INDEX["jawForward"]].sum() == 0 and mask[3:7].sum() == 0
    assert mask[8, ARKIT_INDEX["jawOpen"]] == 1
    scaled, mask2 = arkit_targets(full, {"jawOpen": 0.5})
    j = ARKIT_INDEX["jawOpen"]
    assert np.allclose(scaled[:, j], 0.5 * target[:, j]) and np.array_equal(mask2, mask)
    with pytest.raises(ValueError, match="jawOpn"):
        arkit_targets(full, {"jawOpn": 2.0})


def test_mixed_training_records_provenance(tiny_corpus, tmp_path):
    """Catches a mixed run that ignores the real clips or does not write their provenance and licence."""
    data, _ = tiny_corpus
    real = tmp_path / "real"
    real.mkdir()
    for i in range(3):
        _write_clip(real / f"r{i}.npz", seconds=1.5, seed=i)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=3, batch=4, crop_seconds=1.0, warmup=1,
                      model={"d_model": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 64, "context": 20},
                      augment=0.0, identities=2, threads=1, checkpoint_every=3, validate_every=3,
                      real=[RealSource(dir=str(real), heldout=["r2"])], real_fraction=1.0)
    train(cfg, log_every=1)
    prov = json.loads((tmp_path / "run" / "real_provenance.json").read_text())[str(real)]
    assert [c["id"] for c in prov["clips"]] == ["r0", "r1"] and prov["heldout"] == ["r2"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(h["total"]) for h in history if "total" in h)


def test_channels_that_do_not_move_are_not_supervised(tmp_path):
    """Catches min_std being ignored: a source's flat channel would teach the model to keep it still."""
    for i in range(2):
        _write_clip(tmp_path / f"c{i}.npz", seed=i)
        z = dict(np.load(tmp_path / f"c{i}.npz"))
        z["weights"][:, ARKIT_INDEX["mouthFunnel"]] = 0.002 * z["mask"][:, ARKIT_INDEX["mouthFunnel"]]
        np.savez(tmp_path / f"c{i}.npz", **z)
    clips = RealClipSet([RealSource(dir=str(tmp_path), min_std=0.01)])
    assert clips.dropped[str(tmp_path)] == ["mouthFunnel"]
    assert all(m[:, ARKIT_INDEX["mouthFunnel"]].sum() == 0 and m[:, ARKIT_INDEX["jawOpen"]].sum() > 0
               for m in clips.masks)
    mouth = RealClipSet([RealSource(dir=str(tmp_path), prefixes=["jaw", "mouth"])])
    assert "eyeBlinkLeft" in mouth.dropped[str(tmp_path)] and "jawOpen" not in mouth.dropped[str(tmp_path)]
    assert all(m[:, ARKIT_INDEX["eyeBlinkLeft"]].sum() == 0 for m in mouth.masks)


def test_correlation_term_is_scale_free_and_masked():
    """Catches a correlation term that depends on the curve's scale or offset, rewards the wrong sign, reads an
    unmeasured entry or counts a channel that does not move in the crop."""
    from lsf_core.training.realtime import _corr_loss

    gen = torch.Generator().manual_seed(2)
    b, t, c = 2, 40, 3
    target = torch.rand(b, t, c, generator=gen)
    target[:, :, 2] = 0.3                                        # does not move: not counted
    measured = torch.ones(b, t, c)
    measured[1, 20:] = 0                                          # lost frames
    same = 0.2 * target + 0.5
    assert float(_corr_loss(same, target, measured, 0.01)) == pytest.approx(0.0, abs=1e-5)
    assert float(_corr_loss(-target, target, measured, 0.01)) == pytest.approx(2.0, abs=1e-5)
    pred = torch.rand(b, t, c, generator=gen, requires_grad=True)
    loss = _corr_loss(pred, target, measured, 0.01)
    loss.backward()
    assert float(pred.grad[measured == 0].abs().max()) == 0.0
    assert float(pred.grad[..., 2].abs().max()) == 0.0
    assert float(pred.grad[..., :2][measured[..., :2] > 0].abs().max()) > 0
    garbage = torch.where(measured > 0, target, torch.rand(b, t, c, generator=gen))
    assert torch.allclose(_corr_loss(pred.detach(), garbage, measured, 0.01), loss.detach())
    cfg = TrainConfig(corr_weight=0.5)
    w, deltas = torch.ones(K), torch.rand(b, K, 6, generator=gen)
    full = torch.rand(b, t, K, generator=gen)
    _, parts = _loss(full, full * 0.5, torch.ones(b, t, K), w, deltas, cfg)
    assert parts["corr"] == pytest.approx(0.0, abs=1e-5)
    _, parts = _loss(1 - full, full * 0.5, torch.ones(b, t, K), w, deltas, cfg)
    assert parts["corr"] == pytest.approx(2.0, abs=1e-4)
    small = 0.5 + 0.004 * torch.randn(b, t, K, generator=gen)     # moves, but less than the default 0.01
    assert _loss(1 - small, small, torch.ones(b, t, K), w, deltas, cfg)[1]["corr"] == pytest.approx(0.0, abs=1e-6)
    cfg_small = TrainConfig(corr_weight=0.5, corr_min_std=0.002)
    assert _loss(1 - small, small, torch.ones(b, t, K), w, deltas, cfg_small)[1]["corr"] == pytest.approx(2.0, abs=0.02)
