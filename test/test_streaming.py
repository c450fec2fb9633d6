"""StreamingAnimator: the live code path, fed like a microphone feeds it."""
from __future__ import annotations

import numpy as np
import pytest

from lsf_core.audio import AudioError, resample
from lsf_core.runtime.liveliness import LivelinessConfig
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


def _feed(anim, x, rate, chunk, stamp0=0.0, rng=None):
    frames, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(chunk // 4, chunk * 2)) if rng is not None else chunk
        frames += anim.push(x[pos:pos + n], rate, stamp0 + pos / rate)
        pos += n
    return frames + anim.flush()


def test_frame_count_stamps_and_shapes(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=60.0), model=model, rig=rig)
    frames = _feed(anim, speech, 16000, 512, stamp0=100.0)
    duration = speech.size / 16000
    assert abs(len(frames) - duration * 60) <= 2
    stamps = np.array([f.stamp for f in frames])
    assert stamps[0] == pytest.approx(100.0) and np.allclose(np.diff(stamps), 1 / 60)
    f = frames[len(frames) // 2]
    assert f.blendshapes.shape == (52,) and f.vertex_offsets.shape == rig.vertices.shape
    assert f.blendshapes.min() >= 0.0 and f.blendshapes.max() <= 1.0


def test_vertex_offsets_are_made_on_first_use_once_and_match_the_rig(model, rig, speech, monkeypatch):
    """Kills: offsets computed for every frame in push (a consumer of blendshapes alone pays for a product over
    every vertex), computed again on each use, or made from other weights than the frame's."""
    calls = []
    made = rig.offsets
    monkeypatch.setattr(rig, "offsets", lambda w: calls.append(1) or made(w))
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    frames = _feed(anim, speech, 16000, 512)
    assert len(frames) > 10 and not calls
    f = frames[len(frames) // 2]
    assert list(rig.blendshape_names) == anim.blendshape_names   # ARKit rig: its weights are the frame's
    np.testing.assert_allclose(f.vertex_offsets, made(f.blendshapes), atol=1e-6)
    assert f.vertex_offsets is f.vertex_offsets and len(calls) == 1 and np.abs(f.vertex_offsets).max() > 0


@pytest.mark.parametrize("rate", [25.0, 30.0, 60.0, 120.0])
def test_frames_cover_the_audio_to_its_end(model, rig, speech, rate):
    """One frame per output period for every instant of audio, the last model frame's span included:
    live (push + flush) and whole-clip (animate) alike."""
    for samples in (16000, 16213, 12345):
        want = int(np.ceil(samples / 16000 * rate - 1e-9))
        anim = StreamingAnimator(StreamConfig(rate=rate), model=model, rig=rig)
        live = _feed(anim, speech[:samples], 16000, 512)
        assert len(live) == want, (rate, samples)
        assert live[-1].stamp < samples / 16000 <= live[-1].stamp + 1 / rate + 1e-9
        assert len(anim.animate(speech[:samples], 16000)) == want


def test_chunking_rate_and_channels_do_not_change_the_output(model, rig, speech, rng):
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    ref = anim.animate(speech, 16000)
    again = _feed(anim, speech, 16000, 640, rng=rng)
    assert len(again) == len(ref)
    assert max(np.abs(a.blendshapes - b.blendshapes).max() for a, b in zip(ref, again)) < 1e-4
    # 48 kHz stereo int16 of the same speech: resampling differs slightly, the motion must not
    x48 = (resample(speech, 16000, 48000) * 20000).astype(np.int16)
    stereo = np.stack([x48, x48], 1)
    anim.reset()
    other = _feed(anim, stereo, 48000, 1536)
    assert abs(len(other) - len(ref)) <= 1
    n = min(len(other), len(ref))
    diff = np.mean([np.abs(a.blendshapes - b.blendshapes).mean() for a, b in zip(ref[:n], other[:n])])
    assert diff < 0.02


def test_gaps_late_chunks_and_bad_input(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig)
    half = speech.size // 2
    frames = anim.push(speech[:half], 16000, 0.0)
    # a 200 ms gap is filled with silence: frames keep a regular clock
    frames += anim.push(speech[half:], 16000, half / 16000 + 0.2)
    # a chunk from the past is dropped and counted
    frames += anim.push(speech[:1600], 16000, 0.5)
    frames += anim.flush()
    stats = anim.stats()
    assert stats["gaps"] == 1 and stats["late_chunks"] == 1 and stats["dropped_chunks"] == 1
    assert abs(len(frames) - (speech.size / 16000 + 0.2) * 25) <= 2
    assert np.allclose(np.diff([f.stamp for f in frames]), 0.04)
    for bad in (np.array([np.nan, 0.0], np.float32), np.zeros(0, np.float32), np.zeros((3, 2, 2))):
        with pytest.raises(AudioError):
            anim.push(bad, 16000, 10.0)
    with pytest.raises(AudioError):
        anim.push(np.zeros(100, np.float32), 0, 10.0)


def test_long_gap_restarts_without_a_burst(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig)
    n1 = len(anim.push(speech, 16000, 0.0))
    burst = anim.push(speech[:640], 16000, 60.0)  # a minute later
    assert anim.stats()["restarts"] == 1
    total = n1 + len(burst)
    assert total <= speech.size / 16000 * 25 + 3, "a long gap must not be filled with a minute of frames"


def test_silence_relaxes_to_neutral_and_speech_reopens_at_once(model, rig, speech):
    cfg = StreamConfig(rate=50.0, relax_time=0.2)
    anim = StreamingAnimator(cfg, model=model, rig=rig)
    silence = np.zeros(16000, np.float32)
    x = np.concatenate([speech[:16000], silence, speech[:16000]])
    frames = _feed(anim, x, 16000, 640)
    energy = np.array([np.abs(f.blendshapes).sum() for f in frames])
    speaking = energy[25:45].mean()
    # 200 ms of relax after the hangover: well inside the silent second the face is near neutral
    relaxed = energy[50 + 25:50 + 40]  # (the gate reopens one look-ahead before the next onset)
    assert relaxed.max() < 0.1 * speaking
    # speech onset: within the algorithmic latency the face is back
    assert energy[100 + 6:100 + 15].mean() > 0.5 * speaking


def test_set_rate_and_smoothing(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    half = speech.size // 2
    a = anim.push(speech[:half], 16000, 0.0)
    anim.set_rate(100.0)
    b = anim.push(speech[half:], 16000, half / 16000) + anim.flush()
    assert np.allclose(np.diff([f.stamp for f in b]), 0.01, atol=1e-6)
    assert b[0].stamp > a[-1].stamp
    with pytest.raises(ValueError, match="rate"):
        anim.set_rate(200.0)
    with pytest.raises(ValueError, match="smoothing"):
        anim.set_smoothing(1.5)


def test_rate_and_smoothing_limits_are_inclusive_and_a_rate_change_keeps_the_frame_grid(model, rig, speech):
    """Kills (mutation triage of ``set_rate`` / ``set_smoothing``): a limit made exclusive or moved (25 and
    120 Hz, 0 and 0.95 are valid; just outside is not), and the next frame index rounded past a frame that
    falls exactly on the new grid (a frame skipped at the switch)."""
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    for hz in (25.0, 120.0):
        anim.set_rate(hz)
        assert anim.config.rate == hz
    for hz in (24.99, 120.01):
        with pytest.raises(ValueError, match="25..120"):
            anim.set_rate(hz)
    for alpha in (0.0, 0.95):
        anim.set_smoothing(alpha)
        assert anim.config.smoothing == alpha
    for alpha in (-0.01, 0.96):
        with pytest.raises(ValueError, match="0..0.95"):
            anim.set_smoothing(alpha)
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    half = speech.size // 2
    a = anim.push(speech[:half], 16000, 0.0)
    anim.set_rate(60.0)   # every 30 Hz frame time is on the 60 Hz grid: the next one must not be skipped
    b = anim.push(speech[half:], 16000, half / 16000) + anim.flush()
    assert b[0].stamp == pytest.approx(a[-1].stamp + 1 / 30, abs=1e-9)


def test_smoothing_is_an_exponential_filter_of_the_unsmoothed_output(model, rig, speech):
    """Each smoothed frame is ``a * previous + (1 - a) * raw`` of the same stream without smoothing, exactly.
    Kills: smoothing disabled or ignored, applied to the wrong frame, or the weights swapped."""
    alpha = 0.6
    # the filter runs on the model output before the voice gate: keep the gate open to compare exactly; the
    # liveliness layer adds to the frames after the filter, so it is off here
    off = LivelinessConfig(enabled=False)
    state = None
    expected = []
    ungated = StreamingAnimator(StreamConfig(rate=30.0, vad_threshold_db=-300.0, liveliness=off), model=model, rig=rig)
    for f in ungated.animate(speech, 16000):
        state = f.blendshapes if state is None else alpha * state + (1 - alpha) * f.blendshapes
        expected.append(state)
    smooth_ungated = StreamingAnimator(StreamConfig(rate=30.0, smoothing=alpha, vad_threshold_db=-300.0,
                                                    liveliness=off), model=model, rig=rig).animate(speech, 16000)
    got = np.stack([f.blendshapes for f in smooth_ungated])
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    assert np.abs(got - np.stack([f.blendshapes for f in ungated.animate(speech, 16000)])).max() > 0.01


def test_memory_stays_bounded(model, rig):
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    rng = np.random.default_rng(0)
    for i in range(300):
        anim.push((rng.standard_normal(640) * 0.05).astype(np.float32), 16000, i * 0.04)
    assert len(anim._model_frames) <= 8 and len(anim._gate._audio_db) <= 8
    assert anim._state["layers"][0]["k"].shape[3] == model.config.context - 1


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="rate"):
        StreamConfig(rate=10.0).validate()
    with pytest.raises(ValueError, match="device"):
        StreamConfig(device="tpu").validate()


def test_bf16_precision_really_runs_in_bf16(model, rig, speech):
    """``precision: bf16`` runs the network under bf16 autocast: the frames differ from fp32 by bf16 rounding
    (not bit-identical, not far off), and a matrix product inside the network sees bf16 inputs.
    Kills: the precision parameter read and then ignored (fp32 outputs, bit-identical)."""
    import torch

    fp32 = np.stack([f.blendshapes for f in StreamingAnimator(StreamConfig(), model=model, rig=rig)
                     .animate(speech, 16000)])
    bf16_anim = StreamingAnimator(StreamConfig(precision="bf16"), model=model, rig=rig)
    bf16 = np.stack([f.blendshapes for f in bf16_anim.animate(speech, 16000)])
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    diff = np.abs(bf16 - fp32).max()
    assert 1e-4 < diff < 0.1, diff
    seen = []
    handle = model.identity_mlp[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with bf16_anim._inference():
            model(torch.from_numpy(speech[:16000]).unsqueeze(0))
    finally:
        handle.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    fp16_cpu = StreamingAnimator(StreamConfig(precision="fp16", device="cpu"), model=model, rig=rig)
    assert fp16_cpu._dtype == torch.float32      # fp16 has no CPU kernels worth using: fp32, with a warning


def test_the_engine_keeps_numpy_blas_on_its_thread_budget(model, rig):
    """Each frame's vertex offsets are a numpy BLAS product; OpenBLAS's own threads (one per core) spun against torch
    and the worker: 18 ms a frame instead of 0.1 ms under load. Kills: BLAS threads left at the library default."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(2, user_api="blas"):   # what OpenBLAS starts with on a 2-core machine
        StreamingAnimator(StreamConfig(threads=1), model=model, rig=rig)
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(n == 1 for n in blas), blas
