"""Synchronised playback: stamped audio in, device blocks out, each sample leaving the device ``delay`` seconds
after its audio time (the time its face frame shows). No ROS, no sound library here.

Two clocks meet in a sound card callback: the audio time of the stream (the stamps, on the ROS clock) and
the device's sample clock. ``Playback.render(n, dac_time)`` is called once per device block with the time
at which its first sample will leave the device (PortAudio's ``outputBufferDacTime`` mapped to the ROS
clock); it answers with the ``n`` samples whose audio time is ``dac_time - delay``.

- The read position advances by the sample count, never by wall-clock reads, so jitter in the reported
  DAC times never reaches the sound. Only a persistent error between where the read position is and where
  the DAC times say it should be is corrected: by one sample per block (a 0.3 % stretch of one 20 ms
  block, inaudible) while it is small (clock drift between the source and the sound card), by a jump when
  it exceeds ``jump`` (an underrun or a stall of the device: the delay never grows).
- ``JitterBuffer`` holds the audio by its audio time: chunks land where their stamps say, gaps play as
  silence, audio that arrives after its time has been played is dropped and counted (never played late,
  which would shift everything after it).
- ``DelayPolicy``: a fixed delay, or the animator's latency measured on its face frames (received minus
  stamp, median of the last ``LATENCY_WINDOW`` frames: recent, so a slower or faster animator is followed
  within seconds), raised to the least delay this device and chunk size can keep without underruns (the
  sound then lags the face, and the reason is reported).
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from lsf_core.audio import StreamResampler, downmix

RESAMPLER_TAPS = 63   # StreamResampler's anti-alias filter length (its default)


@dataclass
class PlaybackConfig:
    sample_rate: int = 16000     # device sample rate; audio of other rates is resampled to it
    channels: int = 1            # device channels; audio is downmixed, then copied to every channel
    delay: float = -1.0          # s from audio time to the device output; < 0 = follow the animator's latency
    initial_delay: float = 0.25  # s used (auto) until the animator reports its latency
    delay_offset: float = 0.0    # s added to the animator's latency (auto)
    max_delay: float = 3.0       # s: a longer delay is refused (auto: clamped)
    buffer: float = 6.0          # s of audio held at most
    slew_tolerance: float = 0.002  # s of timing error corrected gently (one sample per block)
    jump: float = 0.04           # s of timing error corrected at once (an underrun, a stall, a delay change)
    margin: float = 0.01         # s of headroom in the least delay that avoids underruns

    def validate(self) -> PlaybackConfig:
        checks = [
            (8000 <= self.sample_rate <= 192000, f"sample_rate must be within 8000..192000 Hz, got {self.sample_rate}"),
            (1 <= self.channels <= 32, f"channels must be within 1..32, got {self.channels}"),
            (self.delay <= self.max_delay, f"delay {self.delay} s is more than max_delay {self.max_delay} s"),
            (0.0 <= self.initial_delay <= self.max_delay, f"initial_delay must be within 0..max_delay, "
                                                          f"got {self.initial_delay}"),
            (self.buffer >= 2 * self.max_delay, f"buffer must hold at least 2 x max_delay, got {self.buffer} s"),
            (0.0 < self.slew_tolerance < self.jump, "slew_tolerance must be > 0 and below jump"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


class JitterBuffer:
    """Audio by audio time, on the device's sample grid: a ring of ``capacity`` samples from the read index.

    Sample index ``i`` holds audio time ``origin + i / rate``. ``write`` puts a chunk where its stamp says
    (snapping to the previous chunk's end when it is within 2 samples of it, so rounding never leaves a
    one-sample hole); ``read`` returns a span, silence where nothing was written, and forgets it.
    """

    RESTART = 1.0   # s: contiguous chunks this far before the read position start a new time line

    def __init__(self, rate: int, channels: int, capacity: int):
        self.rate, self.channels, self.capacity = rate, channels, capacity
        self.origin: float | None = None
        self._ring = np.zeros((capacity, channels), np.float32)
        self._filled = np.zeros(capacity, bool)
        self.read_index: int | None = None       # next index to play; None until playback is anchored
        self._write_end: int | None = None
        self.late_samples = 0                    # arrived after their time had been played: dropped
        self.overflow_samples = 0                # too far ahead of the read position: dropped

    def index(self, t: float) -> float:
        return (t - self.origin) * self.rate

    def _lowest(self) -> int:
        if self.read_index is not None:
            return self.read_index
        return (self._write_end or 0) - self.capacity   # not playing yet: keep the newest audio

    def write(self, samples: np.ndarray, stamp: float) -> None:
        if self.origin is None:
            self.origin = stamp
        start = int(round(self.index(stamp)))
        if self._write_end is not None and abs(start - self._write_end) <= 2:
            start = self._write_end
        end = start + samples.shape[0]
        lo = self._lowest()
        if start < lo:
            cut = min(lo - start, samples.shape[0])
            self.late_samples += cut if self.read_index is not None else 0
            samples, start = samples[cut:], start + cut
        hi = (self.read_index if self.read_index is not None else start) + self.capacity
        if end > hi:
            cut = min(end - hi, samples.shape[0])
            self.overflow_samples += cut
            samples, end = samples[:samples.shape[0] - cut], end - cut
        if samples.shape[0]:
            pos = np.arange(start, end) % self.capacity
            self._ring[pos] = samples
            self._filled[pos] = True
        self._write_end = max(self._write_end or end, end)

    def read(self, n: int) -> np.ndarray:
        pos = np.arange(self.read_index, self.read_index + n) % self.capacity
        out = np.where(self._filled[pos, None], self._ring[pos], 0.0).astype(np.float32)
        self._filled[pos] = False
        self.read_index += n
        return out

    def skip_to(self, index: int) -> int:
        """Move the read position (a jump): what lies between is forgotten. Returns how many written samples
        were forgotten unplayed."""
        forgotten = 0
        if self.read_index is not None and index > self.read_index:
            pos = np.arange(self.read_index, min(index, self.read_index + self.capacity)) % self.capacity
            forgotten = int(self._filled[pos].sum())
            self._filled[pos] = False
        self.read_index = index
        return forgotten

    def buffered(self) -> float:
        """Seconds of audio written ahead of the read position."""
        if self._write_end is None or self.read_index is None:
            return 0.0
        return max(0, self._write_end - self.read_index) / self.rate


class DelayPolicy:
    """The delay from audio time to the device output: fixed, or the animator's latency (auto), never less
    than ``minimum`` (what the chunk size and the device's lead allow without underruns)."""

    HYSTERESIS = 0.005   # s: smaller changes of the measured latency are ignored (noise)
    LATENCY_WINDOW = 90  # face frames (3 s at 30 Hz) the latency is the median of
    MIN_FRAMES = 10      # face frames seen before their latency is used

    def __init__(self, config: PlaybackConfig):
        self.config = config
        self.fixed = config.delay >= 0.0
        self.measured: float | None = None
        self._frames: deque[float] = deque(maxlen=self.LATENCY_WINDOW)
        self.minimum = 0.0
        self.source = "parameter" if self.fixed else "initial"

    def observe_frame(self, stamp: float, published: float) -> None:
        """A face frame with ``stamp`` was published (received) at ``published``: feeds the measured latency."""
        if math.isfinite(published - stamp):
            self._frames.append(published - stamp)
            if len(self._frames) >= self.MIN_FRAMES:
                self.update_latency(float(np.median(self._frames)))

    def update_latency(self, latency_s: float) -> bool:
        """The animator's latency (face frame published minus its stamp); True when it was taken."""
        if self.fixed or not math.isfinite(latency_s) or latency_s <= 0.0:
            return False
        if self.measured is None or abs(latency_s - self.measured) > self.HYSTERESIS:
            self.measured = latency_s
            self.source = "animator"
        return True

    def wanted(self) -> float:
        if self.fixed:
            return self.config.delay
        base = self.config.initial_delay if self.measured is None else self.measured + self.config.delay_offset
        return min(max(base, 0.0), self.config.max_delay)

    def delay(self) -> float:
        if self.fixed:
            return self.config.delay
        return min(max(self.wanted(), self.minimum), self.config.max_delay)

    def limited(self) -> bool:
        """True when the least underrun-free delay is above the wanted one: the sound lags the face."""
        return not self.fixed and self.minimum > self.wanted() + 1e-4


class Playback:
    """Thread-safe: ``push`` from the thread that receives audio, ``render`` from the sound card callback."""

    def __init__(self, config: PlaybackConfig | None = None):
        self.config = (config or PlaybackConfig()).validate()
        c = self.config
        self.policy = DelayPolicy(c)
        self.buffer = JitterBuffer(c.sample_rate, c.channels, int(c.buffer * c.sample_rate))
        self._lock = threading.Lock()
        self._err: float | None = None            # smoothed timing error, samples (target - read)
        self._lags: deque[float] = deque(maxlen=200)   # s: arrival minus audio time of each chunk's first sample
        self._leads: deque[float] = deque(maxlen=200)  # s: DAC time minus callback time
        self._block_s = 0.0
        self._stale: tuple | None = None   # (samples, stamp, end stamp) of a chunk from far before the read position
        self._resampler: list | None = None   # [StreamResampler, stamp of its first input, next stamp, outputs]
        self._audio_leaves = float("-inf")   # when the last block that held audio leaves the device (audio clock)
        self.counts = {"chunks": 0, "blocks": 0, "jumps": 0, "slews": 0, "played_samples": 0, "resets": 0,
                       "skipped_samples": 0}   # audio forgotten unplayed when the device stalled (a jump ahead)

    # ---- input ------------------------------------------------------------------------------------
    def push(self, samples: np.ndarray, sample_rate: int, stamp: float, arrival: float | None = None) -> None:
        """One chunk (frames[, channels]) captured at ``stamp`` (audio time of its first sample); ``arrival``
        (same clock) feeds the least underrun-free delay."""
        x = downmix(np.asarray(samples, np.float32))
        if sample_rate != self.config.sample_rate:
            x, stamp = self._resample(x, sample_rate, stamp)
        x = np.repeat(x[:, None], self.config.channels, axis=1)
        with self._lock:
            if self._restarted(x, stamp):
                old, first = self.buffer, self._stale
                self.buffer = JitterBuffer(old.rate, old.channels, old.capacity)
                self.buffer.late_samples = old.late_samples - first[0].shape[0]   # it was not late after all
                self.buffer.overflow_samples = old.overflow_samples
                self.buffer.write(first[0], first[1])
                self._err, self._stale = None, None
                self.counts["resets"] += 1
            self.buffer.write(x, stamp)
            self.counts["chunks"] += 1
            if arrival is not None:
                self._lags.append(arrival - stamp)
                self._update_minimum()

    def _restarted(self, x: np.ndarray, stamp: float) -> bool:
        """A new time line (a source restarted, a clock jumped): a chunk beyond the buffer's end, or two
        contiguous chunks far before the read position (one alone is late audio: dropped and counted; if the
        next one follows it, both start the new time line)."""
        b = self.buffer
        if b.origin is None or b.read_index is None:
            return False
        start = b.index(stamp)
        if start > b.read_index + b.capacity:
            return True
        if start + x.shape[0] >= b.read_index - b.RESTART * b.rate:
            self._stale = None
            return False
        stale, self._stale = self._stale, (x, stamp, stamp + x.shape[0] / b.rate)
        if stale is not None and abs(stamp - stale[2]) * b.rate <= 2:
            self._stale = stale
            return True
        return False

    def _resample(self, x: np.ndarray, rate: int, stamp: float) -> tuple[np.ndarray, float]:
        """Audio of another rate, chunk by chunk without seams (one resampler per contiguous stream): the
        output and the audio time of its first sample (the resampler's filter delay taken off)."""
        rs = self._resampler
        if rs is None or rs[0].rate_in != rate or abs(stamp - rs[2]) > 2.0 / rate:
            rs = self._resampler = [StreamResampler(rate, self.config.sample_rate), stamp, stamp, 0]
        conv, t0, _, done = rs
        y = conv(x)
        filter_delay = (RESAMPLER_TAPS - 1) / 2 / rate if rate > self.config.sample_rate else 0.0
        rs[2], rs[3] = stamp + x.shape[0] / rate, done + y.shape[0]
        return y, t0 + done / self.config.sample_rate - filter_delay

    def observe_frame(self, stamp: float, published: float) -> None:
        with self._lock:
            self.policy.observe_frame(stamp, published)

    def _update_minimum(self) -> None:
        if self._lags and self._leads:
            # p90: one late chunk or one slow callback must not raise the delay for good
            self.policy.minimum = (float(np.percentile(self._lags, 90)) + float(np.percentile(self._leads, 90))
                                   + self._block_s + self.config.margin)

    # ---- output -----------------------------------------------------------------------------------
    def render(self, n: int, dac_time: float, now: float | None = None) -> np.ndarray:
        """The ``n`` device samples whose first one leaves the device at ``dac_time`` (audio clock);
        ``now`` (same clock) is when the callback runs, for the least underrun-free delay."""
        c = self.config
        with self._lock:
            self.counts["blocks"] += 1
            if now is not None:
                self._leads.append(dac_time - now)
                self._block_s = n / c.sample_rate
                self._update_minimum()
            buf = self.buffer
            if buf.origin is None:
                return np.zeros((n, c.channels), np.float32)
            target = buf.index(dac_time - self.policy.delay())
            if buf.read_index is None:
                buf.skip_to(int(round(target)))
                self._err = 0.0
            raw = target - buf.read_index
            if abs(raw) > c.jump * c.sample_rate:      # underrun, stall, delay change: go where time says
                self.counts["skipped_samples"] += buf.skip_to(int(round(target)))
                self._err = 0.0
                self.counts["jumps"] += 1
                step = 0
            else:
                self._err = raw if self._err is None else 0.8 * self._err + 0.2 * raw
                step = int(np.sign(self._err)) if abs(self._err) > c.slew_tolerance * c.sample_rate else 0
                self._err -= step
                self.counts["slews"] += step != 0
            if buf.buffered() > 0:
                self._audio_leaves = dac_time + n / c.sample_rate
            block = buf.read(n + step)
            if step:   # n + 1 or n - 1 samples into n: a 1-sample stretch, smooth
                src = np.linspace(0.0, n + step - 1, n)
                block = np.stack([np.interp(src, np.arange(n + step), block[:, ch]) for ch in range(c.channels)],
                                 axis=1).astype(np.float32)
            self.counts["played_samples"] += n
            return block

    # ---- state ------------------------------------------------------------------------------------
    def drained(self, now: float | None = None) -> bool:
        """True when audio has come and all of it has been handed to the device; given ``now`` (the clock of
        ``render``'s DAC times), only once the last of it has also left the device (the device and the sound
        server hold a block or more: a process that closed its stream at once cut the end of ``lsf-ros say``)."""
        with self._lock:
            handed = self.counts["chunks"] > 0 and self.buffer.read_index is not None and self.buffer.buffered() == 0
            return handed and (now is None or now >= self._audio_leaves)

    def device_running(self, seconds: float = 0.5) -> bool:
        """True once the device has asked for ``seconds`` of blocks: past the stall a new stream can have while the
        sound server starts it (1.8 s after the second block on the test machine's PulseAudio null sink), during
        which audio that falls due is skipped."""
        with self._lock:
            return self.counts["blocks"] * self._block_s >= seconds

    def error_ms(self) -> float:
        """Smoothed timing error of the read position, ms (positive: behind where the DAC times say)."""
        with self._lock:
            return 0.0 if self._err is None else 1000.0 * self._err / self.config.sample_rate

    def stats(self) -> dict:
        with self._lock:
            c, b, p = self.config, self.buffer, self.policy
            return {
                "delay_ms": 1000.0 * p.delay(), "wanted_delay_ms": 1000.0 * p.wanted(),
                "least_delay_ms": 1000.0 * p.minimum, "delay_source": p.source, "delay_limited": p.limited(),
                "device_lead_ms": 1000.0 * (max(self._leads) if self._leads else float("nan")),
                "late_s": b.late_samples / c.sample_rate, "overflow_s": b.overflow_samples / c.sample_rate,
                "buffered_s": b.buffered(), "jumps": self.counts["jumps"], "slews": self.counts["slews"],
                "chunks": self.counts["chunks"], "blocks": self.counts["blocks"], "resets": self.counts["resets"],
                "played_s": self.counts["played_samples"] / c.sample_rate,
                "skipped_s": self.counts["skipped_samples"] / c.sample_rate,
            }
