"""Shared fixtures. Every test that starts rclpy goes through ``ros_env`` (loopback only, own domain)."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the slow, optional checks (soaks, training, long benchmarks)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow, optional check: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """A ROS domain of our own for this test run (pid-derived, within the valid 1..101 range)."""
    return 1 + (os.getpid() + random.randrange(1000)) % 100


@pytest.fixture()
def ros_env(monkeypatch, ros_domain_id) -> dict[str, str]:
    """Environment for any process that starts rclpy: loopback discovery, our own domain id."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def synth_speech(path: Path, text: str, voice: str = "en-us", rate: int = 16000) -> Path:
    """Real speech audio made with espeak-ng (installed by scripts/setup.sh), resampled to ``rate``."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    import soundfile as sf

    from lsf_core.audio import load_audio

    sf.write(str(path), load_audio(raw, rate), rate)
    raw.unlink()
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """About three seconds of English speech at 16 kHz."""
    d = tmp_path_factory.mktemp("speech")
    return synth_speech(d / "speech.wav", "Hello robot, please open the big blue box for me.")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def speech(speech_wav) -> np.ndarray:
    """``speech_wav`` as float32 samples at 16 kHz."""
    from lsf_core.audio import load_audio

    return load_audio(speech_wav)


@pytest.fixture(scope="session")
def rig():
    """The default avatar's rig."""
    from lsf_core.avatar import default_rig

    return default_rig()


@pytest.fixture(scope="session")
def model():
    """A seeded, untrained realtime model whose outputs sit well inside (0, 1), so that gating and relaxing
    to neutral are visible."""
    import torch

    from lsf_core.models.registry import build_model

    torch.manual_seed(0)
    m = build_model("realtime").eval()
    with torch.no_grad():
        m.head[1].bias.fill_(0.5)
    return m


@pytest.fixture(scope="session")
def model_path(model, tmp_path_factory) -> Path:
    """``model`` saved as a model file, for node processes."""
    from lsf_core.models.registry import save_model

    return save_model(model, tmp_path_factory.mktemp("model") / "realtime.safetensors")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A corpus of a few clips made by the real `lsf data make` pipeline: (directory, manifest)."""
    pytest.importorskip("pocketsphinx")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from lsf_core.synth import corpus
    from lsf_core.synth.dataset import DataConfig, make_dataset

    have_asterisk = corpus.ASTERISK_SOUNDS.is_dir() and corpus.ASTERISK_TEXT.exists()
    out = tmp_path_factory.mktemp("corpus")
    cfg = DataConfig(seed=7, synthetic_hours=0.008, val_fraction=0.3, template_texts=50,
                     asterisk=have_asterisk, asterisk_max_prompts=6, workers=2)
    return out, make_dataset(cfg, out, progress=False)
