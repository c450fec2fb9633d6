"""The shipped default (`realtime` weights + our avatar) judged on held-out real human speech.

The held-out Asterisk prompts were never in the training corpus (split by prompt). Thresholds are the
ones the model card reports against (lsf_core.evaluation.heldout.THRESHOLDS)."""
from __future__ import annotations

import numpy as np
import pytest

from lsf_core.evaluation.heldout import THRESHOLDS, evaluate, heldout_clips
from lsf_core.models.registry import WEIGHTS_DIR, load_model
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


@pytest.fixture(scope="module")
def animator():
    assert (WEIGHTS_DIR / "realtime.safetensors").is_file(), "the default model ships in lsf_core/weights"
    return StreamingAnimator(StreamConfig(model="realtime", rate=25.0))


def test_shipped_weights_are_small_and_load(animator):
    size_mb = (WEIGHTS_DIR / "realtime.safetensors").stat().st_size / 2**20
    assert size_mb <= 25
    model = load_model("realtime")
    assert model.output_kind == "arkit" and len(model.output_names) == 52
    assert animator.algorithmic_latency() <= 0.120 + 1e-9   # 80 ms look-ahead + one 40 ms frame


def test_heldout_real_speech(animator):
    result = evaluate(animator, heldout_clips(max_prompts=40, progress=False))
    assert result["prompts"] >= 30
    assert result["jaw_corr"] >= THRESHOLDS["jaw_corr"], result
    assert result["bilabial_closure_rate"] >= THRESHOLDS["bilabial_closure_rate"], result
    assert result["open_vowel_jaw_gt_bilabial"], result
    assert result["silence_neutral_rate"] >= THRESHOLDS["silence_neutral_rate"], result


def test_demo_clip_moves_the_mouth_and_rests_at_the_end(animator):
    from lsf_core import DEMO_CLIP
    from lsf_core.audio import load_audio

    x = load_audio(DEMO_CLIP)
    x = np.concatenate([x, np.zeros(16000, np.float32)])
    frames = animator.animate(x, 16000)
    jaw = np.array([f.blendshapes[17] for f in frames])  # jawOpen
    offsets = np.stack([f.vertex_offsets for f in frames])
    assert jaw[:150].max() > 0.2 and jaw[:150].std() > 0.03
    assert jaw[-10:].max() < 0.05
    assert np.abs(offsets[:150]).max() > 0.002  # millimetres of lip motion on the avatar
