"""Forced alignment (pocketsphinx) against speech whose timing is known."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lsf_core.audio import MODEL_RATE
from lsf_core.data.align import (
    SIL,
    Aligner,
    Alignment,
    AlignmentError,
    boundary_errors,
    ipa_to_arpabet,
    normalize_words,
)
from lsf_core.data.tts import Voice, flite_with_segments, synthesize

pytest.importorskip("pocketsphinx")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return Aligner()


def test_normalize_words_marks_punctuation_and_symbols():
    assert normalize_words("Press * to mute, or # to exit. [beep]") == [
        "press", "star", "to", "mute", "pau_", "or", "pound", "to", "exit"]


def test_ipa_to_arpabet_covers_diphthongs_and_affricates():
    assert ipa_to_arpabet("ɹˈoʊbɑːt") == ["R", "OW", "B", "AA", "T"]
    assert ipa_to_arpabet("tʃˈaɪld") == ["CH", "AY", "L", "D"]


@needs_espeak
def test_words_made_separately_are_found_where_they_were_put(aligner):
    """espeak-ng speaks each word alone; the words are joined directly or with pauses (>= 160 ms, the
    aligner carves pauses of 150 ms and more), so their true
    start and end times are known. Every word boundary must fall within 80 ms of them, 30 ms on average."""
    words = ["please", "open", "the", "blue", "window", "maybe", "tomorrow"]
    rng = np.random.default_rng(1)
    pieces, truth, t = [np.zeros(3200, np.float32)], [], 0.2
    for w in words:
        x = synthesize(Voice("espeak", "en-us"), w)
        loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
        x = x[loud[0]: loud[-1] + 1]
        gap = np.zeros(int(rng.choice([0.0, rng.uniform(0.16, 0.4)]) * MODEL_RATE), np.float32)
        truth.append((t, t + x.size / MODEL_RATE))
        pieces += [x, gap]
        t += (x.size + gap.size) / MODEL_RATE
    audio = np.concatenate(pieces + [np.zeros(3200, np.float32)])
    al = aligner.align(audio, " ".join(words))
    assert [w for w, _, _ in al.words] == words
    starts = np.array([s for _, s, _ in al.words]) - np.array([s for s, _ in truth])
    ends = np.array([e for _, _, e in al.words]) - np.array([e for _, e in truth])
    errs = np.abs(np.concatenate([starts, ends]))
    assert errs.max() < 0.08 and errs.mean() < 0.03, (starts, ends)


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_phone_boundaries_match_flite_own_segment_times(aligner):
    """flite reports where it put each phone; pocketsphinx's boundaries must mostly agree."""
    errs = []
    for text in ("Bob moved the big map to the museum.", "Five happy children watched the boats."):
        audio, segs = flite_with_segments(text)
        phones = [p for p, _ in segs]
        ends = np.array([e for _, e in segs], np.float32)
        starts = np.concatenate([[0.0], ends[:-1]]).astype(np.float32)
        ref = Alignment(phones, starts, ends, [], True)
        hyp = aligner.align(audio, text)
        errs.append(boundary_errors(ref, hyp))
    e = np.concatenate(errs)
    assert e.size >= 40
    assert np.median(e) < 0.025 and np.mean(e < 0.05) > 0.8, (np.median(e), np.mean(e < 0.05))


@needs_espeak
def test_alignment_covers_the_clip_with_silence_at_the_ends(aligner, speech_wav):
    from lsf_core.audio import load_audio

    audio = load_audio(speech_wav)
    padded = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(8000, np.float32)])
    al = aligner.align(padded, "Hello robot, please open the big blue box for me.")
    assert al.starts[0] == 0.0 and abs(al.ends[-1] - padded.size / MODEL_RATE) < 1e-4
    assert np.all(al.ends > al.starts) and np.allclose(al.starts[1:], al.ends[:-1])
    assert al.phones[0] == SIL and al.phones[-1] == SIL and al.ends[0] >= 0.45
    assert {"B", "M", "P"} <= set(al.phones)


def test_silence_only_is_rejected(aligner):
    with pytest.raises(AlignmentError, match="no audible speech"):
        aligner.align(np.zeros(16000, np.float32), "hello")
    with pytest.raises(AlignmentError, match="no words"):
        aligner.align(np.ones(16000, np.float32) * 0.1, "[beep]")
