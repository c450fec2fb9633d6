"""Shared fixtures. Every test that starts rclpy goes through ``ros_env`` (loopback only, own domain).

With ``LSF_REQUIRE_TOOLS=1`` (set by ``.ci/run``) a test skipped because a tool or package is missing
fails instead: a half-failed setup cannot give a green run. Only the skips in ``ALLOWED_SKIPS`` remain,
for what cannot exist on the CI machine (a GPU, rviz2, the launch package) or is opt-in (slow checks).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the slow, optional checks (soaks, training, long benchmarks)")


# skips that stay skips under LSF_REQUIRE_TOOLS=1 (README lists them): matched against the skip reason
ALLOWED_SKIPS = (
    "slow, optional check",          # opt-in: --run-slow
    "needs a CUDA GPU",              # CI has none
    "launch_ros is not importable",  # not on PyPI or in Debian (docs/ros_ecosystem.md runs it by hand)
    "rviz2 is not installed",        # a GUI, not on PyPI
    "this machine has an input device",        # the no-device error path needs a machine without one
    "every audio message package is installed",  # the missing-package error path needs one missing
)


def _require_tools(report) -> None:
    if not report.skipped or os.environ.get("LSF_REQUIRE_TOOLS") != "1" or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped under LSF_REQUIRE_TOOLS=1 (a required tool is missing): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _require_tools((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _require_tools((yield).get_result())


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow, optional check: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """A ROS domain of our own for this test run, reserved on this host (another run, a demo, a benchmark
    started beside it gets another one), so two runs never hear each other."""
    from lsf_ros.domain import reserve_domain

    return reserve_domain()


@pytest.fixture()
def ros_env(monkeypatch, ros_domain_id) -> dict[str, str]:
    """Environment for any process that starts rclpy: loopback discovery, our own domain id."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture()
def ros_ctx(ros_env):
    """An rclpy context of its own on this run's domain, shut down after the test."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(args=[], context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


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
    """The default avatar's rig, shared by every test: its arrays are read-only, so a test that would change
    them in place (and make results depend on test order) fails at once."""
    from lsf_core.face.avatar import default_rig

    r = default_rig()
    for value in vars(r).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return r


def _fingerprint(module) -> list:
    return [(name, p.detach().clone()) for name, p in sorted(module.state_dict().items())]


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
    before = _fingerprint(m)
    yield m
    changed = [name for (name, a), (_, b) in zip(before, _fingerprint(m)) if not torch.equal(a, b)]
    assert not changed, f"a test changed the shared model fixture in place (deep-copy it first): {changed}"


@pytest.fixture(scope="session")
def model_path(model, tmp_path_factory) -> Path:
    """``model`` saved as a model file, for node processes."""
    from lsf_core.models.registry import save_model

    return save_model(model, tmp_path_factory.mktemp("model") / "realtime.safetensors")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A corpus of a few clips made by the real ``lsf data make`` command (exit code checked):
    (directory, manifest)."""
    pytest.importorskip("pocketsphinx")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    import yaml

    from lsf_core.cli.main import main
    from lsf_core.config import dump_config
    from lsf_core.data import sources
    from lsf_core.data.dataset import DataConfig

    have_asterisk = sources.ASTERISK_SOUNDS.is_dir() and sources.ASTERISK_TEXT.exists()
    root = tmp_path_factory.mktemp("corpus")
    recipe, out = root / "recipe.yaml", root / "corpus"
    dump_config(DataConfig(seed=7, synthetic_hours=0.008, val_fraction=0.3, template_texts=50,
                           asterisk=have_asterisk, asterisk_max_prompts=6, workers=2), recipe)
    assert main(["data", "make", "-o", str(out), "--config", str(recipe)]) == 0
    return out, yaml.safe_load((out / "manifest.yaml").read_text())


@pytest.fixture(scope="session")
def funasr_emotion2vec():
    """Builds FunASR's emotion2vec (the reference implementation, installed by scripts/setup.sh) from one of
    our ``Emotion2VecConfig`` override dicts, with seeded random weights made non-trivial (nonzero extra
    tokens and norms, ALiBi scales in [-0.2, 1.5], so that the clamp to >= 0 matters)."""
    import logging

    import torch

    root, env = list(logging.getLogger().handlers), dict(os.environ)
    from funasr.models.emotion2vec.model import Emotion2vec  # importing funasr imports all of it: undo its
    logging.getLogger().handlers[:] = root  # side effects on the test process (a root log handler, env vars)
    os.environ.clear()
    os.environ.update(env)

    from lsf_core.config import from_dict
    from lsf_core.models.emotion2vec import Emotion2VecConfig

    def build(overrides: dict, per_layer_alibi: bool = False, seed: int = 0):
        c = from_dict(Emotion2VecConfig, overrides)
        spec = " + ".join(f"[({ch}, {k}, {s})]" for ch, k, s in c.conv_layers)
        audio = dict(type="AUDIO", prenet_depth=c.prenet_depth, prenet_layerdrop=0.05, prenet_dropout=0.1,
                     start_drop_path_rate=0.0, end_drop_path_rate=0.0, num_extra_tokens=c.num_extra_tokens,
                     init_extra_token_zero=True, mask_noise_std=0.01, mask_prob_min=None, mask_prob=0.5,
                     inverse_mask=False, mask_prob_adjust=0.05, keep_masked_pct=0.0, mask_length=5, add_masks=False,
                     remove_masks=False, mask_dropout=0.0, encoder_zero_mask=True, mask_channel_prob=0.0,
                     mask_channel_length=64, ema_local_encoder=False, local_grad_mult=1.0, use_alibi_encoder=True,
                     alibi_scale=1.0, learned_alibi=False, alibi_max_pos=None, learned_alibi_scale=True,
                     learned_alibi_scale_per_head=True, learned_alibi_scale_per_layer=per_layer_alibi,
                     num_alibi_heads=c.num_heads, model_depth=c.depth,
                     decoder=dict(decoder_dim=c.embed_dim // 2, decoder_groups=c.conv_pos_groups, decoder_kernel=7,
                                  decoder_layers=4, input_dropout=0.1, add_positions_masked=False,
                                  add_positions_all=False, decoder_residual=True, projection_layers=1,
                                  projection_ratio=2.0),
                     extractor_mode="layer_norm", feature_encoder_spec=spec, conv_pos_width=c.conv_pos_width,
                     conv_pos_groups=c.conv_pos_groups, conv_pos_depth=c.conv_pos_depth, conv_pos_pre_ln=False)
        conf = dict(loss_beta=0.0, loss_scale=None, depth=c.depth, start_drop_path_rate=0.0, end_drop_path_rate=0.0,
                    num_heads=c.num_heads, norm_eps=c.norm_eps, norm_affine=True, encoder_dropout=0.1,
                    post_mlp_drop=0.1, attention_dropout=0.1, activation_dropout=0.0, dropout_input=0.0,
                    layerdrop=0.05, embed_dim=c.embed_dim, mlp_ratio=c.mlp_ratio, layer_norm_first=False,
                    average_top_k_layers=c.depth, end_of_block_targets=False, clone_batch=8,
                    modalities=dict(audio=audio))
        torch.manual_seed(seed)
        ref = Emotion2vec(model_conf=conf).eval()
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            ref.modality_encoders["AUDIO"].alibi_scale.uniform_(-0.2, 1.5)
        return ref

    return build


@pytest.fixture(scope="session")
def face_fixtures():
    """test/fixtures/make_fixtures.py, which writes the committed face files, as a module (their small avatars
    are the tests' truth)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "test" / "fixtures" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def face_files() -> dict[str, Path]:
    """Face files as third parties export them, committed in test/fixtures/faces (see make_fixtures.py)."""
    folder = REPO / "test" / "fixtures" / "faces"
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".glb", ".obj")}
