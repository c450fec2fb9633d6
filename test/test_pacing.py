"""Paced output (lsf_core.runtime.pacing): each frame released at its stamp + a delay, the policy stepped on a
simulated clock (deterministic), the thread on the real one."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from lsf_core.runtime.pacing import MAX_AHEAD, FramePacer, PaceQueue

RATE = 30.0


@dataclass
class F:
    stamp: float


def _chunked_run(queue: PaceQueue | None, chunk: float, seconds: float = 12.0, look: float = 0.12,
                 compute: float = 0.004, step: float = 0.001) -> np.ndarray:
    """Frames as the engine makes them from ``chunk``-second audio messages: every frame whose audio (plus the
    look-ahead) is in comes out when its chunk arrives, + ``compute``. Returns each frame's latency when
    handed on (released - stamp), stepping the queue every ``step`` s (None: handed on when ready)."""
    made, lat, k = 0, [], 0
    arrivals = np.arange(chunk, seconds + 1e-9, chunk)
    for now in np.arange(0.0, seconds + 1.0, step):
        while k < len(arrivals) and arrivals[k] + compute <= now + 1e-12:
            end = arrivals[k] - look
            new = []
            while made / RATE <= end + 1e-9:
                new.append(F(made / RATE))
                made += 1
            if queue is None:
                lat += [now - f.stamp for f in new]
            else:
                queue.add(new, now)
            k += 1
        if queue is not None:
            due, _ = queue.take_due(now)
            lat += [now - f.stamp for f in due]
    return np.array(lat)


@pytest.mark.parametrize("chunk", [0.02, 0.064, 0.1])
def test_auto_pacing_gives_every_frame_the_same_latency(chunk):
    """With 20-100 ms chunks the engine's frames come out in bursts whose latency spreads over the chunk; paced
    (auto) they all have one latency, about the largest readiness + the margin.
    Kills: frames handed on when ready; the delay from the median or the mean instead of the p95; a delay
    that ignores the margin."""
    raw = _chunked_run(None, chunk)
    assert np.ptp(raw[90:]) > 0.6 * chunk                      # the bursts the pacer removes
    q = PaceQueue(delay=-1.0)
    lat = _chunked_run(q, chunk)
    assert len(lat) == len(raw)                                # nothing lost, nothing repeated
    steady = lat[120:]
    assert np.ptp(steady) <= 0.0021, np.ptp(steady)            # one latency (to the 1 ms step)
    p95 = np.percentile(raw[-90:], 95)
    assert p95 + q.margin - 0.002 <= q.delay <= raw.max() + q.margin + 0.002
    assert steady.mean() == pytest.approx(q.delay, abs=0.0015)
    assert q.counts["frames"] == len(lat) and q.counts["late"] <= 3


def test_fixed_delay_order_and_the_next_release():
    """A fixed delay releases each frame exactly at stamp + delay, in order, and says when the next is due.
    Kills: a release compared with the wrong side (early frames); order lost; a wrong wait."""
    q = PaceQueue(delay=0.3)
    q.add([F(1.0), F(1.0 + 1 / RATE), F(1.0 + 2 / RATE)], now=1.05)
    assert q.take_due(1.29) == ([], pytest.approx(0.01))
    due, wait = q.take_due(1.3)
    assert [f.stamp for f in due] == [1.0] and wait == pytest.approx(1 / RATE)
    due, wait = q.take_due(1.3 + 1 / RATE)
    assert [f.stamp for f in due] == [1.0 + 1 / RATE] and wait == pytest.approx(1 / RATE)
    assert q.delay == 0.3 and len(q) == 1 and q.counts["late"] == 0
    # a frame ready after its release goes at once and is counted late
    q.add([F(0.5)], now=1.4)
    due, _ = q.take_due(1.4)
    assert [f.stamp for f in due] == [1.0 + 2 / RATE, 0.5] and q.counts["late"] == 2


def test_a_stamp_far_ahead_is_not_held_and_the_auto_delay_has_hysteresis():
    """A frame stamped beyond delay + MAX_AHEAD (a source clock ahead of ours) goes at once; the auto delay
    rises at once and falls only past the hysteresis.
    Kills: a face held for the whole clock offset; a delay that chases every frame."""
    q = PaceQueue(delay=0.2)
    q.add([F(10.0 + MAX_AHEAD + 0.01)], now=10.0)
    assert len(q.take_due(10.0)[0]) == 1
    a = PaceQueue(delay=-1.0, window=10)
    a.add([F(0.0)], now=0.1)
    assert a.delay == pytest.approx(0.1 + a.margin)
    a.add([F(1.0)], now=1.2)          # later: up at once
    assert a.delay == pytest.approx(0.2 + a.margin)
    for i in range(9):                # slightly faster: within the hysteresis, kept
        a.add([F(2.0 + i)], now=2.0 + i + 0.197)
    assert a.delay == pytest.approx(0.2 + a.margin)
    for i in range(10):               # much faster: down
        a.add([F(20.0 + i)], now=20.0 + i + 0.05)
    assert a.delay == pytest.approx(0.05 + a.margin)


def test_the_thread_releases_on_the_clock_and_close_hands_on_the_rest():
    """FramePacer on the real clock: nothing goes out before stamp + delay; close() hands on what is held.
    Kills: a pacer that publishes on submit; frames lost at close."""
    got, lock = [], threading.Lock()

    def publish(frames):
        with lock:
            got.extend((f.stamp, time.time()) for f in frames)

    p = FramePacer(publish, time.time, delay=0.15)
    t0 = time.time()
    p.submit([F(t0 + i / RATE) for i in range(6)])
    deadline = time.time() + 10.0
    while len(got) < 3 and time.time() < deadline:
        time.sleep(0.01)
    p.submit([F(t0 + 30.0)])         # 30 s ahead, beyond MAX_AHEAD: goes right after the frames before it
    p.submit([F(t0 + 1.0)])          # held until close
    while len(got) < 7 and time.time() < deadline:
        time.sleep(0.01)
    assert p.pending() == 1
    p.close()
    stamps = [s for s, _ in got]
    assert stamps[:6] == [t0 + i / RATE for i in range(6)] and len(stamps) == 8
    assert all(recv >= s + 0.15 - 1e-3 for s, recv in got[:6])
