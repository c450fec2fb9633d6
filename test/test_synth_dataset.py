"""`lsf data make` end to end on a few clips: layout, shapes, splits, loader, reproducible plan."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import yaml

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.data import sources as corpus
from lsf_core.data.dataset import DataConfig, list_split, load_clip, plan_jobs

pytest.importorskip("pocketsphinx")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
HAVE_ASTERISK = corpus.ASTERISK_SOUNDS.is_dir() and corpus.ASTERISK_TEXT.exists()


def test_layout_manifest_and_splits(tiny_corpus):
    out, manifest = tiny_corpus
    on_disk = yaml.safe_load((out / "manifest.yaml").read_text())
    assert on_disk["fps"] == 25 and on_disk["blendshape_names"] == list(ARKIT_NAMES)
    assert on_disk["recipe"]["seed"] == 7 and on_disk["counts"] == manifest["counts"]
    splits = {s: list_split(out, s) for s in ("train", "val", "test")}
    assert splits["train"] and splits["val"]
    assert not (set(splits["train"]) & set(splits["val"])) and not (set(splits["train"]) & set(splits["test"]))
    assert manifest["failed"] <= 2
    if HAVE_ASTERISK:
        assert splits["test"] and all(i.startswith("ast_") for i in splits["test"])
    with pytest.raises(ValueError, match="split"):
        list_split(out, "dev")


def test_clips_have_the_trainers_format(tiny_corpus):
    out, _ = tiny_corpus
    ids = list_split(out, "train") + list_split(out, "val") + list_split(out, "test")
    for clip_id in ids:
        with np.load(out / "clips" / f"{clip_id}.npz", allow_pickle=False) as z:
            assert set(z.files) == {"blendshapes", "phones_start", "phones_end", "phones", "text", "source",
                                    "speaker"}
        clip = load_clip(out, clip_id)
        bs, audio = clip["blendshapes"], clip["audio"]
        assert bs.dtype == np.float32 and bs.shape == (math.ceil(audio.size * 25 / 16000), 52)
        assert bs.min() >= 0.0 and bs.max() <= 1.0
        assert clip["phones"].dtype.kind == "U" and clip["phones_start"].dtype == np.float32
        assert np.allclose(clip["phones_start"][1:], clip["phones_end"][:-1])
        assert clip["phones_end"][-1] == pytest.approx(audio.size / 16000, abs=1e-3)
        assert clip["text"] and clip["speaker"] and clip["source"]
        jaw = bs[:, ARKIT_NAMES.index("jawOpen")]
        assert jaw.max() > 0.2                                   # speech opens the mouth
        sil = [(s, e) for p, s, e in zip(clip["phones"], clip["phones_start"], clip["phones_end"])
               if p == "SIL" and e - s > 0.5]
        for s, e in sil:                                         # long pauses rest at neutral
            mid = int((s + 0.25) * 25), int((e - 0.1) * 25)
            assert jaw[mid[0]: mid[1]].max(initial=0.0) < 0.05
    with pytest.raises(FileNotFoundError, match="no such clip"):
        load_clip(out, "missing")


def test_plan_is_reproducible_and_holds_out_voices_and_prompts():
    prompts = [corpus.Prompt(f"p{i}", "hello there", corpus.ASTERISK_SOUNDS / f"p{i}.g722") for i in range(60)]
    cfg = DataConfig(seed=3, synthetic_hours=0.05, template_texts=100)
    a, b = plan_jobs(cfg, prompts), plan_jobs(cfg, prompts)
    assert a == b
    train_voices = {j.voice.name for j in a if j.voice and j.split == "train"}
    val_voices = {j.voice.name for j in a if j.voice and j.split == "val"}
    assert not (train_voices & val_voices)
    assert not ({j.text for j in a if j.split == "train"} & {j.text for j in a if j.split == "val"})
    real_train = [j for j in a if j.voice is None and j.split == "train"]
    real_test = [j for j in a if j.voice is None and j.split == "test"]
    assert len(real_train) + len(real_test) == 60 and len(real_train) <= 40 and len(real_test) >= 10
    with pytest.raises(ValueError, match="train_fraction"):
        corpus.split_prompts(prompts, 0, 0.9)
