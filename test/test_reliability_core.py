"""StreamingAnimator under bad input and faults: nothing it is fed may crash it, poison it or stall it."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lsf_core.audio import AudioError
from lsf_core.models.base import FPS
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

CHUNK = 1024  # 64 ms at 16 kHz


def _stream(anim, x, stamp0=0.0, chunk=CHUNK):
    frames = []
    for i in range(0, len(x), chunk):
        frames += anim.push(x[i:i + chunk], 16000, stamp0 + i / 16000)
    return frames + anim.flush()


def _weights(frames):
    return np.stack([f.blendshapes for f in frames])


def test_each_frame_leaves_as_soon_as_its_audio_is_in(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    alg = anim.algorithmic_latency()
    assert alg == pytest.approx(0.120)  # 2 look-ahead frames + its own 40 ms (mel windows end at frame ends)
    waits = []
    for i in range(0, len(speech) - CHUNK, CHUNK):
        end = (i + CHUNK) / 16000
        waits += [end - f.stamp for f in anim.push(speech[i:i + CHUNK], 16000, i / 16000)]
    waits = np.array(waits)
    # never before its audio is in, never later than one chunk + one model frame (interpolation) after it
    assert waits.min() >= alg - 1e-6
    assert waits.max() <= alg + 1 / FPS + CHUNK / 16000 + 1e-6
    assert waits.min() <= alg + 0.01


def test_bad_chunks_are_rejected_without_changing_state(model, rig, speech):
    ref = _stream(StreamingAnimator(StreamConfig(), model=model, rig=rig), speech)
    anim = StreamingAnimator(StreamConfig(), model=model, rig=rig)
    frames = []
    bad_inputs = [
        (np.array([0.1, np.nan], np.float32), 16000, 0.0), (np.full(64, np.inf, np.float32), 16000, 0.0),
        (np.zeros(0, np.int16), 16000, 0.0), (np.zeros((4, 2, 2), np.int16), 16000, 0.0),
        (np.array(["a", "b"]), 16000, 0.0), (np.zeros(64, np.complex64), 16000, 0.0),
        (np.zeros(64, np.int16), 0, 0.0), (np.zeros(64, np.int16), -16000, 0.0),
        (np.zeros(64, np.int16), 10**9, 0.0), (np.zeros(64, np.int16), 16000, float("nan")),
        (np.zeros(64, np.int16), 16000, float("inf")),
    ]
    for i in range(0, len(speech), CHUNK):
        for x, rate, offset in bad_inputs if i % (4 * CHUNK) == 0 else ():
            with pytest.raises(AudioError):
                anim.push(x, rate, i / 16000 + offset)
        frames += anim.push(speech[i:i + CHUNK], 16000, i / 16000)
    frames += anim.flush()
    assert len(frames) == len(ref)
    np.testing.assert_array_equal(_weights(frames), _weights(ref))


def test_out_of_range_floats_are_clipped_and_never_poison_the_model(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(), model=model, rig=rig)
    loud = speech * 1e30   # finite, but squares overflow float32: must not reach the model as is
    frames = _stream(anim, loud)
    assert anim.stats()["clipped_chunks"] > 0 and anim.stats()["model_resets"] == 0
    assert all(np.isfinite(f.blendshapes).all() and np.isfinite(f.vertex_offsets).all() for f in frames)
    after = _stream(anim, speech, stamp0=100.0)
    ref = _stream(StreamingAnimator(StreamConfig(), model=model, rig=rig), speech, stamp0=100.0)
    np.testing.assert_allclose(_weights(after), _weights(ref), atol=1e-5)


def test_stamps_jumping_back_and_forth_then_normal_audio(model, rig, speech, rng):
    anim = StreamingAnimator(StreamConfig(rate=30.0), model=model, rig=rig)
    t = 1000.0
    for k in range(60):   # jitter, duplicates, big jumps both ways
        jump = float(rng.choice([-50.0, -2.0, -0.3, -0.01, 0.0, 0.01, 0.3, 2.0, 50.0]))
        anim.push(speech[(k % 8) * CHUNK:(k % 8 + 1) * CHUNK], 16000, t + jump)
        t += CHUNK / 16000
    anim.flush()
    st = anim.stats()
    assert st["late_chunks"] > 0 and st["restarts"] > 0
    frames = _stream(anim, speech, stamp0=5000.0)
    stamps = np.array([f.stamp for f in frames])
    assert abs(len(frames) - len(speech) / 16000 * 30) <= 2
    assert stamps[0] == pytest.approx(5000.0) and np.allclose(np.diff(stamps), 1 / 30)


def test_a_source_whose_clock_restarts_is_followed_not_dropped(model, rig, speech):
    anim = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig)
    first = []
    for i in range(0, len(speech), CHUNK):  # no flush: the source carries on, but ...
        first += anim.push(speech[i:i + CHUNK], 16000, 50.0 + i / 16000)
    # ... restarts with its clock back at 0: one chunk is taken for a stale duplicate, then followed
    again = []
    for i in range(0, len(speech), CHUNK):
        again += anim.push(speech[i:i + CHUNK], 16000, i / 16000)
    again += anim.flush()
    st = anim.stats()
    assert st["clock_resets"] == 1 and st["dropped_chunks"] == 1
    tail = [f for f in again if f.stamp >= 50.0]  # the first stream's held-back frames, flushed at the reset
    new = [f for f in again if f.stamp < 50.0]
    assert abs(len(first) + len(tail) - len(speech) / 16000 * 25) <= 2
    assert abs(len(new) - (len(speech) - CHUNK) / 16000 * 25) <= 2
    assert new[0].stamp == pytest.approx(CHUNK / 16000) and np.allclose(np.diff([f.stamp for f in new]), 0.04)


def test_accelerator_out_of_memory_at_start_falls_back_to_the_cpu(model, rig, speech, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_to = type(model).to

    def to(self, *args, **kwargs):
        if "cuda" in str(args[0] if args else kwargs.get("device", "")):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "to", to)
    with caplog.at_level(logging.WARNING, logger="lsf_core.runtime.streaming"):
        anim = StreamingAnimator(StreamConfig(device="cuda"), model=model, rig=rig)
    assert anim.device == "cpu" and anim.stats()["device_fallbacks"] == 1
    assert any("falling back to the CPU" in r.getMessage() and "OutOfMemoryError" in r.getMessage()
               for r in caplog.records)
    assert abs(len(_stream(anim, speech)) - len(speech) / 16000 * 30) <= 2


def test_accelerator_failing_mid_stream_falls_back_without_losing_a_frame(model, rig, speech, monkeypatch, caplog):
    ref = _stream(StreamingAnimator(StreamConfig(), model=model, rig=rig), speech)
    anim = StreamingAnimator(StreamConfig(), model=model, rig=rig)
    frames = anim.push(speech[:CHUNK], 16000, 0.0)  # the stream state is live ...
    anim.device = "meta"   # ... when the accelerator (meta stands in for one on this CPU-only machine) fails
    real = type(model).forward_stream
    calls = {"n": 0}

    def forward_stream(self, audio, state, identity=None):
        calls["n"] += 1
        if audio.device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        return real(self, audio, state, identity)

    monkeypatch.setattr(type(model), "forward_stream", forward_stream)
    with caplog.at_level(logging.WARNING, logger="lsf_core.runtime.streaming"):
        for i in range(CHUNK, len(speech), CHUNK):
            frames += anim.push(speech[i:i + CHUNK], 16000, i / 16000)
        frames += anim.flush()
    assert anim.device == "cpu" and anim.stats()["device_fallbacks"] == 1
    assert any("meta failed" in r.getMessage() for r in caplog.records)
    assert len(frames) == len(ref)
    np.testing.assert_allclose(_weights(frames), _weights(ref), atol=1e-5)
    # on the CPU there is nothing to fall back to: the error is not swallowed
    monkeypatch.setattr(type(model), "forward_stream",
                        lambda self, *a: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("cpu?")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _stream(anim, speech)


def test_a_nan_from_the_model_resets_its_state(model, rig, speech, monkeypatch):
    anim = StreamingAnimator(StreamConfig(), model=model, rig=rig)
    real = type(model).forward_stream
    calls = {"n": 0}

    def forward_stream(self, audio, state, identity=None):
        out, state = real(self, audio, state, identity)
        calls["n"] += 1
        if calls["n"] == 20:
            out = out * float("nan")
        return out, state

    monkeypatch.setattr(type(model), "forward_stream", forward_stream)
    frames = _stream(anim, speech)
    assert anim.stats()["model_resets"] == 1
    assert all(np.isfinite(f.blendshapes).all() for f in frames)
    assert abs(len(frames) - len(speech) / 16000 * 30) <= 2
