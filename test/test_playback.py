"""Synchronised playback (lsf_core.runtime.playback), simulated: stamped chunks arrive at given times, a device
asks for blocks at given DAC times; every click in the audio must come out at its audio time + delay."""
from __future__ import annotations

import numpy as np
import pytest

from lsf_core.runtime.playback import DelayPolicy, Playback, PlaybackConfig

SR = 16000
BLOCK = 320          # 20 ms device blocks
LEAD = 0.06          # s: the device asks for a block this long before it plays


def click_train(seconds: float, every: float = 0.237, start: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Quiet noise with a 2 ms click every ``every`` s: (samples, click positions)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(int(seconds * SR)) * 0.01).astype(np.float32)
    at = (np.arange(start, seconds - 0.01, every) * SR).astype(int)
    for i in at:
        x[i:i + 32] = 0.9
    return x, at


def clicks_in(y: np.ndarray) -> np.ndarray:
    hot = np.abs(y) > 0.45
    on = np.flatnonzero(hot[1:] & ~hot[:-1]) + 1
    return on[np.r_[True, np.diff(on) > 200]] if on.size else on


def run(pb: Playback, x: np.ndarray, t0: float, chunk: int, seconds: float, dac_of=None, arrive_of=None,
        skip_chunks=()):
    """Drive ``pb``: chunk k (audio time t0 + k*chunk/SR) arrives when it is complete (``arrive_of`` may change
    that); block j is asked for LEAD s before ``dac_of(j)`` (default: contiguous from t0). Returns the output and
    the DAC time of every output sample."""
    dac_of = dac_of or (lambda j: t0 + j * BLOCK / SR)
    arrive_of = arrive_of or (lambda k: t0 + (k + 1) * chunk / SR)
    events = [(arrive_of(k), 0, k) for k in range(int(np.ceil(len(x) / chunk))) if k not in skip_chunks]
    events += [(dac_of(j) - LEAD, 1, j) for j in range(int(seconds * SR / BLOCK))]
    out, times = [], []
    for when, kind, i in sorted(events):
        if kind == 0:
            pb.push(x[i * chunk:(i + 1) * chunk], SR, t0 + i * chunk / SR, arrival=when)
        else:
            d = dac_of(i)
            out.append(pb.render(BLOCK, d, now=when)[:, 0])
            times.append(d + np.arange(BLOCK) / SR)
    return np.concatenate(out), np.concatenate(times)


def offsets_ms(x, at, t0, y, times, delay):
    """For each click: (time it left the device) - (its audio time + delay), ms; NaN for clicks not played."""
    played = clicks_in(y)
    got = []
    for i in at:
        want = t0 + i / SR + delay
        near = played[np.abs(times[played] - want) < 0.1] if played.size else played
        got.append(1000 * (times[near[0]] - want) if near.size else np.nan)
    return np.array(got)


def test_each_click_leaves_the_device_at_its_audio_time_plus_the_delay():
    """Kills: scheduling by arrival time instead of stamps; a delay applied with the wrong sign; a read position
    that drifts by a sample per block."""
    x, at = click_train(12.0)
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.2))
    y, times = run(pb, x, 1000.0, 1024, 13.0)
    off = offsets_ms(x, at, 1000.0, y, times, 0.2)
    assert np.all(np.isfinite(off)) and np.abs(off).max() <= 1000 / SR + 1e-6, off
    assert pb.stats()["late_s"] == 0 and pb.counts["jumps"] == 0


def test_jittery_dac_times_do_not_reach_the_sound():
    """The read position follows the sample count: DAC times reported with +-4 ms of noise leave the output
    contiguous (no jump, no stretch beyond a few samples) and every click within 2 ms.
    Kills: re-anchoring every block on the reported DAC time; a smoothing that follows the noise."""
    x, at = click_train(20.0)
    rng = np.random.default_rng(3)
    noise = rng.uniform(-0.004, 0.004, 10_000)
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.2))
    y, times = run(pb, x, 50.0, 640, 21.0, dac_of=lambda j: 50.0 + j * BLOCK / SR + noise[j])
    true_times = 50.0 + np.arange(len(y)) / SR       # the real DAC times (without the reporting noise)
    off = offsets_ms(x, at, 50.0, y, true_times, 0.2)
    assert np.nanmax(np.abs(off)) <= 2.0, off
    assert pb.counts["jumps"] == 0 and pb.counts["slews"] <= 20, pb.counts


@pytest.mark.parametrize("ppm", [-300, 300])
def test_a_drifting_sound_card_is_followed_without_jumps(ppm):
    """A device whose sample clock runs ``ppm`` off the audio's clock (a real sound card: tens to hundreds of
    ppm) for 60 s: without correction the error would reach 18 ms; it stays under 3 ms with one-sample slews.
    Kills: playing by sample count alone (the sound drifts off the face); correcting drift with jumps."""
    x, at = click_train(60.0, every=0.97)
    rate = 1 + ppm * 1e-6
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.2))
    y, times = run(pb, x, 10.0, 1024, 61.0, dac_of=lambda j: 10.0 + j * BLOCK / SR / rate)
    off = offsets_ms(x, at, 10.0, y, times, 0.2)
    assert np.all(np.isfinite(off)) and np.abs(off[-20:]).max() <= 3.0, off
    assert pb.counts["jumps"] == 0 and pb.counts["slews"] > 50


def test_a_device_stall_costs_the_stalled_audio_not_a_growing_delay():
    """The device stalls 300 ms at 4 s (an underrun: its DAC times jump ahead): the audio of the stall is
    skipped once and every later click is on time again.
    Kills: playing on from where the read position was (the sound then lags the face by the stall, for good)."""
    x, at = click_train(10.0)
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.2))
    stall = int(4.0 * SR / BLOCK)
    y, times = run(pb, x, 0.0, 1024, 10.0, dac_of=lambda j: j * BLOCK / SR + (0.3 if j >= stall else 0.0))
    off = offsets_ms(x, at, 0.0, y, times, 0.2)
    after = (at / SR) > 4.0 + 0.3
    assert np.abs(off[after]).max() <= 1000 / SR + 1e-6, off
    assert pb.counts["jumps"] == 1
    assert pb.stats()["skipped_s"] == pytest.approx(0.3, abs=2 / SR)   # the stall's audio, reported


def test_gaps_play_as_silence_and_late_audio_is_dropped_not_played_late():
    """Chunk 20 never comes (a gap) and chunk 40 arrives 0.5 s late: both play as silence, the late chunk is
    counted, and the clicks after them are on time.
    Kills: appending chunks in arrival order (a gap or a late chunk would shift everything after it)."""
    x = np.full(int(6 * SR), 0.3, np.float32)
    chunk = 1024
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.15))
    arrive = lambda k: (k + 1) * chunk / SR + (0.5 if k == 40 else 0.0)  # noqa: E731
    y, times = run(pb, x, 0.0, chunk, 6.5, arrive_of=arrive, skip_chunks={20})
    audio_time = times - 0.15
    for k in (20, 40):
        span = (audio_time >= k * chunk / SR + 0.001) & (audio_time < (k + 1) * chunk / SR - 0.001)
        assert np.all(y[span] == 0), k
    inside = (audio_time > 0.01) & (audio_time < 5.9)
    silent = inside & (y == 0)
    assert abs(silent.sum() - 2 * chunk) <= 4, silent.sum()
    assert pb.stats()["late_s"] == pytest.approx(chunk / SR)


def test_auto_delay_follows_the_animator_and_never_goes_below_what_the_device_allows():
    """Kills: ignoring the animator's latency (reported or measured on its frames); a delay below chunk + device
    lead (every chunk would arrive after its time: all silence); a fixed delay overridden by measurements."""
    cfg = PlaybackConfig(sample_rate=SR)
    policy = DelayPolicy(cfg)
    assert policy.delay() == pytest.approx(cfg.initial_delay) and policy.source == "initial"
    assert policy.update_latency(0.18) and policy.delay() == pytest.approx(0.18) and policy.source == "animator"
    policy.update_latency(0.182)
    assert policy.delay() == pytest.approx(0.18)    # within the hysteresis
    for k in range(40):                             # the face frames now come 300 +- 20 ms after their stamps
        policy.observe_frame(100.0 + k / 30, 100.3 + k / 30 + (0.02 if k % 2 else -0.02))
    assert policy.delay() == pytest.approx(0.3, abs=0.021)
    policy.minimum = 0.35
    assert policy.delay() == pytest.approx(0.35) and policy.limited()
    assert not policy.update_latency(float("nan"))
    fixed = DelayPolicy(PlaybackConfig(sample_rate=SR, delay=0.1))
    assert not fixed.update_latency(0.3) and fixed.delay() == pytest.approx(0.1)

    # end to end: 100 ms chunks, animator says 80 ms (too little for 100 ms chunks + 60 ms lead): raised, no loss
    x, at = click_train(8.0)
    pb = Playback(PlaybackConfig(sample_rate=SR, initial_delay=0.08))
    pb.policy.update_latency(0.08)
    y, times = run(pb, x, 0.0, 1600, 9.0)
    st = pb.stats()
    assert st["delay_limited"] and st["delay_ms"] >= 1000 * (0.1 + LEAD + BLOCK / SR)
    late_clicks = offsets_ms(x, at, 0.0, y, times, st["delay_ms"] / 1000)
    assert np.abs(late_clicks[at / SR > 1.0]).max() <= 1.0


def test_a_restarted_source_clock_starts_a_new_time_line():
    """A source whose stamps jump 60 s back (a bag replayed in a loop): its audio plays again instead of being
    dropped as late for ever; a single chunk 3 s late is late audio, not a restart.
    Kills: treating a time-line restart as late audio; restarting on one stray chunk."""
    pb = Playback(PlaybackConfig(sample_rate=SR, delay=0.1))
    tone = np.full(1600, 0.5, np.float32)
    for k in range(40):
        pb.push(tone, SR, 100.0 + k * 0.1)
        pb.render(1600, 100.0 + k * 0.1 + 0.1)
    pb.push(tone, SR, 101.0)
    assert pb.counts["resets"] == 0 and pb.stats()["late_s"] == pytest.approx(0.1)
    pb.push(tone, SR, 40.0)
    pb.push(tone, SR, 40.1)
    out = pb.render(3200, 40.1)
    assert pb.counts["resets"] == 1 and np.all(out == 0.5) and pb.stats()["late_s"] == pytest.approx(0.1)


def test_other_rates_and_channels_are_converted():
    """48 kHz stereo in, a 16 kHz mono device out: same duration, the same level. Kills: writing input samples
    1:1 into a device of another rate (3x too slow, and misplaced)."""
    pb = Playback(PlaybackConfig(sample_rate=SR, channels=2, delay=0.05))
    x = np.full((48000, 2), 0.25, np.float32)
    x[24000] = 1.0                               # a click at 0.5 s
    for k in range(0, 48000, 441):               # 9.2 ms chunks: seams must not show
        pb.push(x[k:k + 441], 48000, 5.0 + k / 48000)
    out = np.concatenate([pb.render(1600, 5.05 + k * 0.1) for k in range(11)])
    assert out.shape == (17600, 2) and np.array_equal(out[:, 0], out[:, 1])
    body = np.delete(np.arange(100, 15900), np.arange(7900, 8100) - 100)
    assert np.abs(out[body, 0] - 0.25).max() < 2e-3 and np.all(np.abs(out[16010:, 0]) < 1e-3)
    assert abs(int(np.argmax(out[:, 0])) - 8000) <= 1      # the click at its time


def test_drained_only_once_the_last_audio_has_left_the_device():
    """``lsf-ros say`` once closed its stream as soon as the buffer was empty, while the device and the sound server
    still held the sentence's end (0.3 s of it never reached the speaker). Kills: ``drained(now)`` true as soon as
    the last block was handed over, before its DAC time has passed."""
    pb = Playback(PlaybackConfig(sample_rate=SR, channels=1, delay=0.1))
    t0 = 100.0
    pb.push(np.full(2 * BLOCK, 0.5, np.float32), SR, t0, arrival=t0 + 0.04)
    last_audio = None
    for j in range(40):
        dac = t0 + 0.1 + j * BLOCK / SR
        if np.abs(pb.render(BLOCK, dac, now=dac - LEAD)).max() > 0:
            last_audio = dac
    leaves = last_audio + BLOCK / SR
    assert pb.drained() and pb.drained(leaves + 1e-6)
    assert not pb.drained(leaves - 0.01)     # handed over, still in the device


def test_device_running_after_its_first_half_second_of_blocks():
    """``lsf-ros say`` waits for this before it speaks (a new PulseAudio stream stalls 1.8 s after its second
    block; audio due meanwhile was skipped). Kills: true before the device has asked for that much."""
    pb = Playback(PlaybackConfig(sample_rate=SR, channels=1, delay=0.1))
    assert not pb.device_running()
    for j in range(24):
        pb.render(BLOCK, 10.0 + j * BLOCK / SR, now=10.0 + j * BLOCK / SR - LEAD)
    assert not pb.device_running()          # 24 x 20 ms
    pb.render(BLOCK, 10.5, now=10.5 - LEAD)
    assert pb.device_running()
