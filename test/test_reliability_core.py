"""StreamingAnimator under bad input and faults: nothing it is fed may crash it, poison it or stall it."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch

from lsf_core.audio import AudioError
from lsf_core.models.base import FPS
from lsf_core.runtime.clock import DRIFT_SLACK, ChunkClock
from lsf_core.runtime.health import Health
from lsf_core.runtime.sources import SourceTracker
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


# ---- the stamp clock of unstamped audio ------------------------------------------------------------------
def _arrivals(clock, segments, t=1000.0, chunk=CHUNK):
    """Feed ``clock`` chunks arriving per ``segments`` [(audio s, speed x real time)]: (arrival - duration, stamp)
    per chunk, i.e. the stamp a zero-latency source would have and the one the clock gave."""
    d = chunk / 16000
    out = []
    for seconds, speed in segments:
        for _ in range(int(round(seconds / d))):
            t += d / speed
            out.append((t - d, clock.stamp(chunk, 16000, t)))
    return np.array(out)


def test_the_stamp_clock_never_runs_ahead_of_arrival_after_audio_faster_than_real_time():
    """Catches a clock that re-anchors only when chunks come late (issue #20 fault 3: 10x audio for 20 s left
    every later frame 167 s in the future)."""
    jumps = []
    clock = ChunkClock(resync=0.5, on_jump=lambda kind, s: jumps.append((kind, s)))
    res = _arrivals(clock, [(5.0, 1.0), (200.0, 10.0), (10.0, 1.0)])
    ahead = res[:, 1] - res[:, 0]
    assert ahead.max() <= 0.5 + 1e-9, "a stamp ran more than resync ahead of its arrival"
    after = ahead[-int(7.0 * 16000 / CHUNK):]   # 3 s after the fault: back on time (within the drift slack)
    assert np.abs(after).max() <= DRIFT_SLACK + 1e-9, after
    assert clock.jumps["early"] > 0 and all(s < 0 for kind, s in jumps if kind == "early")
    np.testing.assert_allclose(np.diff(res[-int(7.0 * 16000 / CHUNK):, 1]), CHUNK / 16000)   # contiguous again


def test_the_stamp_clock_follows_time_going_back_and_forth():
    """Catches a clock that keeps its old time line when the clock it is given jumps (issue #20 fault 2: a /clock
    that jumps back 10 s left frames 9.8 s in the future)."""
    clock = ChunkClock(resync=0.5)
    res = _arrivals(clock, [(3.0, 1.0)])
    back = _arrivals(clock, [(3.0, 1.0)], t=res[-1, 0] + CHUNK / 16000 - 10.0)
    assert np.abs(back[:, 1] - back[:, 0]).max() <= 1e-9 and clock.jumps["early"] == 1
    ahead = _arrivals(clock, [(3.0, 1.0)], t=back[-1, 0] + CHUNK / 16000 + 60.0)
    assert np.abs(ahead[:, 1] - ahead[:, 0]).max() <= 1e-9 and clock.jumps["late"] == 1


def test_the_stamp_clock_flags_every_move_back_after_a_stall_and_its_catch_up_burst():
    """A publisher stalls 0.8 s and then sends what it captured meanwhile at once (the start-up of ``lsf-ros demo``
    under load): the count moves forward at the late chunk, then back at the burst. Kills: a move back that is not
    flagged ``moved_back`` (the engine then trims the overlap: 0.77 s of the demo were lost), or a flag without one."""
    moves = []
    clock = ChunkClock(resync=0.5, on_jump=lambda kind, s: moves.append(s))
    d = CHUNK / 16000
    t, flags, stamps = 100.0, [], []
    for k in range(150):
        if k < 30 or k >= 43:
            t += d                   # real time
        elif k == 30:
            t += d + 0.8             # the stall
        else:
            t += 0.001               # the burst: chunks 31..42 were captured during the stall
        stamps.append(clock.stamp(CHUNK, 16000, t))
        flags.append(clock.moved_back)
    assert sum(s > 0 for s in moves) >= 1 and sum(s < 0 for s in moves) >= 1, moves
    assert sum(flags) == sum(s < 0 for s in moves)
    back = [k for k, f in enumerate(flags) if f]
    assert all(stamps[k] < stamps[k - 1] + d - 1e-9 for k in back)     # flagged exactly where the line moved back
    assert all(stamps[k] == pytest.approx(stamps[k - 1] + d) for k in range(1, 150) if not flags[k] and k != 30)
    assert abs(stamps[-1] - (t - d)) <= DRIFT_SLACK + 1e-9           # on time again


def test_the_stamp_clock_ignores_jitter_and_corrects_drift_and_a_late_first_chunk(rng):
    """Catches a clock that shifts with jitter (the count must stay contiguous) or keeps an offset for good."""
    clock = ChunkClock(resync=0.5)
    d = CHUNK / 16000
    arrivals = 100.0 + np.cumsum(np.full(400, d)) + rng.uniform(0.0, 0.04, 400)   # 0-40 ms late, at random
    arrivals[0] += 0.3                                                            # the first one 300 ms late
    stamps = np.array([clock.stamp(CHUNK, 16000, t) for t in arrivals])
    assert clock.jumps == {"late": 0, "early": 0, "drift": 1}
    steady = stamps[int(2.5 / d):]
    np.testing.assert_allclose(np.diff(steady), d)
    assert np.abs(steady - (100.0 + np.arange(int(2.5 / d), 400) * d)).max() <= 0.04 + 1e-9
    # a sound card 0.5 % slow: the count falls behind by 5 ms a second; corrected in steps of about DRIFT_SLACK
    clock = ChunkClock(resync=0.5)
    t = 200.0 + np.cumsum(np.full(2000, d * 1.005))
    error = t - d - np.array([clock.stamp(CHUNK, 16000, x) for x in t])
    assert error.max() <= DRIFT_SLACK + 0.02 and clock.jumps["drift"] >= 3 and clock.jumps["late"] == 0


def test_the_stamp_clock_is_not_moved_back_by_the_odd_chunk_dated_by_a_lagging_clock():
    """Sim time: a chunk handled before the /clock message that dates it looks a whole chunk early. Kills: moving
    the count back by the least delayed chunk (the soak on sim time stepped its face stamps back 241 ms)."""
    clock = ChunkClock(resync=5.0)
    d = 4096 / 16000
    t = 1000.0 + d * np.arange(1, 400)
    t[3::5] -= d                              # every fifth chunk dated by the previous tick
    stamps = np.array([clock.stamp(4096, 16000, x) for x in t])
    assert sum(clock.jumps.values()) == 0
    np.testing.assert_allclose(np.diff(stamps), d)


# ---- publishers, transport loss, diagnostics level ----------------------------------------------------------
def test_two_publishers_are_never_spliced_and_lost_messages_are_counted():
    """Catches splicing two publishers' streams into one (issue #20 fault 1) and sequence gaps that go uncounted
    (fault 4)."""
    tracker = SourceTracker(timeout=1.0)
    d = CHUNK / 16000
    taken = []
    for k in range(50):   # A and B interleaved, from the same topic
        if tracker.accept("a", k + 1, d, k * d):
            taken.append(("a", k))
        if tracker.accept("b", k + 1, d, k * d + d / 2):
            taken.append(("b", k))
    assert taken == [("a", k) for k in range(50)] and tracker.publishers(50 * d) == 2
    assert tracker.counts["ignored_messages"] == 50 and tracker.counts["ignored_s"] == pytest.approx(50 * d)
    # A stops; B is followed once A has been quiet for the timeout, as a new source (new time line)
    t = 50 * d + 0.5
    assert not tracker.accept("b", 60, d, t)
    assert tracker.accept("b", 61, d, 50 * d + 1.01) and tracker.new_source and tracker.counts["switches"] == 1
    assert tracker.accept("b", 62, d, 50 * d + 1.1) and not tracker.new_source
    # B loses 7 messages on the way
    assert tracker.accept("b", 70, d, 50 * d + 1.2)
    assert tracker.counts["lost_messages"] == 7 and tracker.counts["lost_s"] == pytest.approx(7 * d)
    assert tracker.publishers(50 * d + 1.2) == 1 and tracker.publishers(100.0) == 0
    # no identities from the middleware: every message is followed, a restarted count is not a loss
    bare = SourceTracker()
    assert all(bare.accept(None, s, d, 0.0) for s in (1, 2, 5, 1, 2))
    assert bare.counts["lost_messages"] == 2


def test_diagnostics_warn_while_audio_is_lost_and_recover_after():
    """Catches a level that stays WARN for good after one loss (or never goes WARN), and a message that does not
    say how many seconds were lost."""
    h = Health(hold=5.0)
    values = {"rtf": 0.2, "input_chunks_per_s": 15.0, "lost_s": 0.0, "dropped_s": 0.0, "bad_messages": 0}
    assert h.assess(values, 0.0)[0] == "OK"
    level, message = h.assess({**values, "lost_s": 3.0, "dropped_s": 0.5}, 1.0)
    assert level == "WARN" and "3.00 s lost in transport" in message and "0.50 s dropped" in message
    assert h.assess({**values, "lost_s": 3.0, "dropped_s": 0.5}, 5.5)[0] == "WARN"
    assert h.assess({**values, "lost_s": 3.0, "dropped_s": 0.5}, 6.5) == ("OK", "animating")
    level, message = h.assess({**values, "lost_s": 3.0, "dropped_s": 0.5, "bad_messages": 2}, 7.0)
    assert level == "WARN" and "2 bad messages" in message
    assert h.assess({**values, "lost_s": 3.0, "dropped_s": 0.5, "bad_messages": 2, "publishers_sending": 2},
                    20.0)[0] == "WARN"


def test_a_time_line_moved_back_restarts_the_stream_and_loses_no_audio(model, rig, speech):
    """The stamp clock moved back (a publisher's stall, then its catch-up burst, once lost 0.77 s of ``lsf-ros demo``):
    with ``restart`` the overlapping audio starts a new stream. Kills: ``restart`` ignored (the overlap is trimmed,
    or a move of more than a second dropped as a stale duplicate)."""
    for back in (0.4, 1.5):
        anim = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig)
        half = len(speech) // 2 // CHUNK * CHUNK
        frames = []
        for i in range(0, half, CHUNK):
            frames += anim.push(speech[i:i + CHUNK], 16000, 10.0 + i / 16000)
        for i in range(half, len(speech), CHUNK):
            frames += anim.push(speech[i:i + CHUNK], 16000, 10.0 - back + i / 16000, restart=i == half)
        frames += anim.flush()
        st = anim.stats()
        assert st["clock_resets"] == 1 and st["dropped_seconds"] == 0.0 and st["late_chunks"] == 0, st
        assert abs(len(frames) - len(speech) / 16000 * 25) <= 2, len(frames)
        stamps = np.array([f.stamp for f in frames])
        assert int(np.sum(np.diff(stamps) < 0)) == 1   # one step back, at the new stream
        assert stamps[-1] == pytest.approx(10.0 - back + len(speech) / 16000, abs=0.05)


def test_the_worker_keeps_a_new_time_line_when_the_queue_drops_its_first_chunk(model, rig, speech):
    """Kills: the ``restart`` of a chunk the full queue dropped is lost with it (the next chunk, stamped 2 s back,
    was then taken for a stale duplicate and dropped too)."""
    from lsf_core.runtime.worker import AnimationWorker

    anim = StreamingAnimator(StreamConfig(rate=25.0), model=model, rig=rig)
    errors: list = []
    worker = AnimationWorker(anim, lambda frames: None, max_queue=0.3, flush_after=0.2,
                             on_bad=lambda what, err: errors.append(err), on_error=errors.append)
    d = CHUNK / 16000
    try:
        with worker.lock:          # the animator is busy: the queue fills up behind the first chunk
            worker.submit(speech[:CHUNK], 16000, 10.0)
            deadline = time.monotonic() + 10
            while worker.queued_s > 0 and time.monotonic() < deadline:   # the worker took it and waits
                time.sleep(0.01)
            worker.submit(speech[CHUNK:2 * CHUNK], 16000, 10.0 + d)
            for k in range(2, 10):   # the time line moves 2 s back at chunk 2; the queue keeps 0.3 s
                worker.submit(speech[k * CHUNK:(k + 1) * CHUNK], 16000, 8.0 + k * d, restart=k == 2)
        deadline = time.monotonic() + 20
        while not worker.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.close()
    st = anim.stats()
    assert not errors and worker.counts["dropped_chunks"] >= 3
    assert st["clock_resets"] == 1 and st["dropped_chunks"] == 0 and st["late_chunks"] == 0, st


def test_the_engine_counts_every_loss_in_seconds(model, rig, speech):
    """Catches losses counted only as chunks (issue #20: "1 dropped chunk" for 7 s of silence) or not at all (trimmed
    overlaps, filled gaps), and a filled gap that makes the next chunk look late (its audio was dropped)."""
    anim = StreamingAnimator(StreamConfig(max_queue=1.0), model=model, rig=rig)
    d = CHUNK / 16000
    anim.push(speech[:CHUNK], 16000, 0.0)
    anim.push(speech[CHUNK:2 * CHUNK], 16000, d + 0.2)            # 0.2 s missing: filled with silence
    anim.push(speech[2 * CHUNK:3 * CHUNK], 16000, 2 * d + 0.2 - 0.03)  # overlaps 30 ms: trimmed
    anim.push(speech[:CHUNK], 16000, 0.0)                          # a stale duplicate: dropped whole
    anim.push(speech[:3 * 16000], 16000, 3 * d + 0.17)            # 3 s in one push, 1 s allowed: 2 s silenced
    st = anim.stats()
    assert st["gaps"] == 1 and st["gap_seconds"] == pytest.approx(0.2, abs=1e-3)
    # the chunk after the filled gap is trimmed by its 30 ms overlap only (the gap once counted twice: dropped whole)
    assert st["late_chunks"] == 2 and st["dropped_chunks"] == 1
    assert st["dropped_seconds"] == pytest.approx(0.03 + d, abs=1e-3)
    assert st["silenced_seconds"] == pytest.approx(2.0, abs=1e-3)
