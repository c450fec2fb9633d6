"""`lsf train` on a tiny corpus made by the real pipeline: the loss falls, runs resume, fine-tuning starts
from a model file, and closed-lip frames weigh more when asked."""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.cli.train import add_arguments, run
from lsf_core.models.registry import load_model
from lsf_core.training.realtime import TrainConfig, _loss, train

TINY_MODEL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 64, "context": 20}


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=TINY_MODEL, steps=60, batch=4, crop_seconds=1.0, lr=3e-3,
                warmup=5, augment=0.0, identities=2, threads=1, checkpoint_every=30, validate_every=30)
    return TrainConfig(**{**base, **kw})


def test_training_learns_resumes_and_fine_tunes(tiny_corpus, tmp_path):
    data, _ = tiny_corpus
    path = train(_cfg(data, tmp_path / "run"), log_every=10)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = [h["total"] for h in history if "total" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    assert any("val_jaw_corr" in h for h in history)
    model = load_model(path)
    assert model.config.d_model == 32 and model.feat_std.min() > 0

    # resume: a longer run continues from the checkpoint's step instead of starting over
    train(_cfg(data, tmp_path / "run", steps=70), log_every=10)
    steps = [h["step"] for h in json.loads((tmp_path / "run" / "history.json").read_text()) if "total" in h]
    assert steps == sorted(steps) and steps[-1] == 70 and steps.count(10) == 1

    # fine-tune from the model file through the command line
    args = argparse.ArgumentParser()
    add_arguments(args)
    cfg_file = tmp_path / "ft.yaml"
    cfg_file.write_text(json.dumps({"model": {**TINY_MODEL, "mel_lead": 240}, "batch": 4, "crop_seconds": 1.0,
                                    "identities": 2, "threads": 1, "augment": 0.0, "validate_every": 10}))
    assert run(args.parse_args(["--config", str(cfg_file), "--data", str(data), "--out", str(tmp_path / "ft"),
                                "--steps", "1", "--init", str(path)])) == 0
    tuned = load_model(tmp_path / "ft" / "model.safetensors")
    assert tuned.config.mel_lead == 240
    assert torch.equal(tuned.feat_mean, model.feat_mean)   # statistics come from the initial model
    first = model.state_dict()
    assert all(torch.allclose(v, first[k], atol=0.05) for k, v in tuned.state_dict().items())   # one small step


def test_closure_weight_emphasises_closed_lips():
    t = 10
    target = torch.zeros(1, t, len(ARKIT_NAMES))
    target[0, 3, ARKIT_INDEX["mouthClose"]] = 0.6            # lips closed at frame 3 only
    pred_closed_err, pred_open_err = target.clone(), target.clone()
    pred_closed_err[0, 3, ARKIT_INDEX["jawOpen"]] += 0.3      # the same error, at the closure ...
    pred_open_err[0, 7, ARKIT_INDEX["jawOpen"]] += 0.3        # ... and elsewhere
    mask, w = torch.ones(1, t, len(ARKIT_NAMES)), torch.ones(len(ARKIT_NAMES))
    deltas = torch.zeros(1, len(ARKIT_NAMES), 3)
    plain, weighted = TrainConfig(), TrainConfig(closure_weight=3.0)
    a, _ = _loss(pred_closed_err, target, mask, w, deltas, plain)
    b, _ = _loss(pred_open_err, target, mask, w, deltas, plain)
    assert np.isclose(float(a), float(b))
    _, c = _loss(pred_closed_err, target, mask, w, deltas, weighted)
    _, d = _loss(pred_open_err, target, mask, w, deltas, weighted)
    assert np.isclose(c["l1"], 4.0 * d["l1"])              # 1 + closure_weight
    assert c["total"] > 2.0 * d["total"]
