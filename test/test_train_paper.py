"""Paper-preset training on a tiny synthetic 3DMEAD-layout dataset: data checks, both stages learn,
resume continues the step count, and a real 2-process torchrun (gloo) run keeps the ranks identical."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lsf_core.config import dump_config
from lsf_core.data.mead import MeadDataset, MeadError, load_clip, write_synthetic
from lsf_core.models.lsf_paper import SMALL_OVERRIDES
from lsf_core.training.paper import TrainPaperConfig, read_region, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mead(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("mead"), sentences=2, seconds=2.0)


def _cfg(mead: Path, out: Path, **kw) -> TrainPaperConfig:
    base = dict(data=str(mead), out=str(out), model=SMALL_OVERRIDES, batch=4, crop_seconds=2.0, lr=3e-3,
                checkpoint_every=1000, validate_every=0, threads=1)
    return TrainPaperConfig(**{**base, **kw})


def test_dataset_layout_splits_and_errors(mead, tmp_path):
    train_set, val_set, test_set = (MeadDataset(mead, s) for s in ("train", "val", "test"))
    assert train_set.identities == ["M003", "M005"] and val_set.identities == ["M028"]
    assert test_set.identities == ["W011"]
    clip = train_set[0]
    assert clip.motion.shape == (50, 53) and clip.audio.shape == (50 * 640,) and clip.shape.shape == (300,)
    # jaw opening follows loudness in the synthetic data
    rms = np.sqrt((clip.audio.reshape(50, 640) ** 2).mean(1))
    assert np.corrcoef(rms, clip.motion[:, 50])[0, 1] > 0.8

    key = clip.key
    bad = tmp_path / "bad"
    (bad / "param").mkdir(parents=True)
    (bad / "wav").mkdir()
    np.save(bad / "param" / f"{key}.npy", np.zeros((1, 90, 403), np.float32))
    with pytest.raises(MeadError, match=rf"wav/{key}.wav"):
        load_clip(bad, key)
    (bad / "wav" / f"{key}.wav").write_bytes((mead / "wav" / f"{key}.wav").read_bytes())
    with pytest.raises(MeadError, match=rf"{key}.npy: 90 frames .* misaligned"):
        load_clip(bad, key)
    np.save(bad / "param" / f"{key}.npy", np.zeros((50, 400), np.float32))
    with pytest.raises(MeadError, match=rf"{key}.npy: expected FLAME parameters"):
        load_clip(bad, key)
    with pytest.raises(MeadError, match="split must be one of"):
        MeadDataset(mead, "holdout")


def test_both_stages_learn_with_vertex_validation(mead, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_flame import synthetic_flame, write_flame_pickle

    torch.set_num_threads(1)
    flame = tmp_path / "flame.pkl"
    write_flame_pickle(flame, synthetic_flame(np.random.default_rng(0)))
    (tmp_path / "lip.txt").write_text(" ".join(map(str, range(0, 40))))
    np.save(tmp_path / "upper.npy", np.arange(40, 80))
    cfg = _cfg(mead, tmp_path / "run", prior_steps=400, predictor_steps=400, validate_every=400, samples=4,
               flame_model=str(flame), lip_region=str(tmp_path / "lip.txt"), upper_region=str(tmp_path / "upper.npy"))
    path = train(cfg, resume=False, log_every=1, progress=False)
    assert path.is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for stage in ("prior", "predictor"):
        losses = [r["loss"] for r in history if r["stage"] == stage and "loss" in r]
        assert len(losses) == 400
        assert losses[0] / min(losses[-10:]) >= 10, (stage, losses[0], losses[-10:])
    val = [r for r in history if "mve" in r]
    assert len(val) == 2
    for key in ("val_exp_l1", "val_jaw_l1", "mve", "lve", "fdd", "mee", "ce", "diversity"):
        assert np.isfinite(val[-1][key]), key
    assert val[-1]["diversity"] > 0


def test_resume_continues_the_step_count(mead, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    train(_cfg(mead, out, stages=["prior"], prior_steps=10, checkpoint_every=5), resume=False, log_every=1,
          progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "prior" and state["step"] == 10 and state["optimizer"]["state"]
    train(_cfg(mead, out, stages=["prior"], prior_steps=16, checkpoint_every=5), resume=True, log_every=1,
          progress=False)
    steps = [r["step"] for r in json.loads((out / "history.json").read_text())]
    assert steps == list(range(1, 17))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 16


def test_cli_trains_a_loadable_model(mead, tmp_path):
    from lsf_core.cli.main import main
    from lsf_core.models.registry import load_model
    from lsf_core.runtime.infer import infer_batch

    torch.set_num_threads(1)
    assert main(["train-paper", "--make-synthetic", str(tmp_path / "demo")]) == 0
    assert len(MeadDataset(tmp_path / "demo", "all")) == 8
    (tmp_path / "cfg.yaml").write_text(dump_config(_cfg(tmp_path / "demo", tmp_path / "x", batch=2)))
    out = tmp_path / "cli"
    assert main(["train-paper", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out), "--prior-steps", "2",
                 "--predictor-steps", "2", "--device", "cpu"]) == 0
    model = load_model(out / "model.safetensors").eval()
    clip = MeadDataset(tmp_path / "demo", "test")[0]
    assert infer_batch(model, [clip.audio], [clip.shape])[0].shape == (model.clip_frames(clip.audio.size), 53)
    assert "prior_steps: 2" in (out / "config.yaml").read_text()


def test_predictor_stage_keeps_the_prior_frozen(mead, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    train(_cfg(mead, out, stages=["prior"], prior_steps=3), resume=False, progress=False)
    from safetensors.torch import load_file

    before = load_file(str(out / "model.safetensors"))
    train(_cfg(mead, out, prior_steps=3, predictor_steps=3), resume=True, progress=False)
    after = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("prior."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("predictor."))


def test_region_files_are_checked(tmp_path):
    (tmp_path / "r.txt").write_text("1, 2 3\n4")
    assert read_region(tmp_path / "r.txt").tolist() == [1, 2, 3, 4]
    (tmp_path / "bad.txt").write_text("1 -2")
    with pytest.raises(ValueError, match="bad.txt"):
        read_region(tmp_path / "bad.txt")


def test_torchrun_two_processes_keep_identical_weights(mead, tmp_path):
    out = tmp_path / "ddp"
    cfg = _cfg(mead, out, prior_steps=3, predictor_steps=2, batch=1, checkpoint_every=1)
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))
    script = tmp_path / "rank_train.py"
    script.write_text(
        "import os, sys\n"
        "import torch.distributed as dist\n"
        "from safetensors.torch import save_file\n"
        "import lsf_core.models.registry as reg\n"
        "from lsf_core.config import load_config\n"
        "from lsf_core.training.paper import TrainPaperConfig, train\n"
        "built = []\n"
        "build = reg.build_model\n"
        "reg.build_model = lambda *a, **k: built.append(build(*a, **k)) or built[-1]\n"
        "cfg = load_config(TrainPaperConfig, sys.argv[1])\n"
        "train(cfg, resume=False, progress=False, log_every=1)\n"
        "assert not dist.is_initialized()\n"
        "state = {k: v.contiguous() for k, v in built[0].state_dict().items()}\n"
        "save_file(state, f\"{cfg.out}/rank{os.environ['RANK']}.safetensors\")\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                           str(tmp_path / "cfg.yaml")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = torch.load(out / "checkpoint.pt", weights_only=True)
    assert fresh["stage"] == "predictor" and fresh["step"] == 2
    history = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2, 3, 1, 2]  # rank 0 logs once per step
