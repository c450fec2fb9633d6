"""Audio handling: read files, decode PCM, downmix, resample (everything ends as float32 mono); a pitch track."""
from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

MODEL_RATE = 16000

# Sample formats as named on the wire (ALSA/GStreamer style) -> numpy dtype and full scale.
SAMPLE_FORMATS: dict[str, tuple[str, float]] = {
    "S16LE": ("<i2", 32768.0),
    "S32LE": ("<i4", 2147483648.0),
    "S8": ("i1", 128.0),
    "U8": ("u1", 128.0),
    "F32LE": ("<f4", 1.0),
    "F64LE": ("<f8", 1.0),
}


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and what was wrong."""


def decode_pcm(data: bytes | bytearray | memoryview | np.ndarray, sample_format: str = "S16LE",
               channels: int = 1, source: str = "audio") -> np.ndarray:
    """Decode interleaved PCM into float32 of shape (frames, channels) in [-1, 1]."""
    if sample_format not in SAMPLE_FORMATS:
        raise AudioError(f"{source}: unknown sample format {sample_format!r}; "
                         f"known: {', '.join(SAMPLE_FORMATS)}")
    if channels < 1:
        raise AudioError(f"{source}: channel count must be >= 1, got {channels}")
    dtype, scale = SAMPLE_FORMATS[sample_format]
    raw = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), dtype=np.uint8)
    width = np.dtype(dtype).itemsize
    if raw.size % (width * channels):
        raise AudioError(f"{source}: {raw.size} bytes is not a whole number of {sample_format} "
                         f"frames of {channels} channel(s)")
    x = raw.view(dtype).astype(np.float32)
    if sample_format == "U8":
        x -= 128.0
    return (x / scale).reshape(-1, channels)


def to_float(samples: np.ndarray, source: str = "audio") -> np.ndarray:
    """Integer or float samples -> float32 in [-1, 1], rejecting NaN/Inf."""
    a = np.asarray(samples)
    if a.dtype.kind == "i":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    elif a.dtype.kind == "u":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
    else:
        raise AudioError(f"{source}: samples of dtype {a.dtype} are not audio")
    if not np.all(np.isfinite(a)):
        raise AudioError(f"{source}: samples contain NaN or Inf")
    return a


def downmix(x: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> mono (frames,)."""
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int = MODEL_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio (exact for integer ratios)."""
    if rate_in <= 0:
        raise AudioError(f"sample rate must be positive, got {rate_in}")
    if rate_in == rate_out or x.size == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)


def load_audio(path: str | Path, rate: int = MODEL_RATE) -> np.ndarray:
    """Read any file soundfile (wav/flac/ogg/...) or ffmpeg can decode -> float32 mono at ``rate``."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - fall back to ffmpeg for mp3/m4a/g722/...
        data, sr = _ffmpeg_read(path, rate, err)
    if data.size == 0:
        raise AudioError(f"{path}: the file holds no samples")
    return resample(downmix(to_float(data, str(path))), sr, rate)


def _ffmpeg_read(path: Path, rate: int, first_error: Exception) -> tuple[np.ndarray, int]:
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path}: cannot decode ({first_error}); install ffmpeg for more formats")
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
                           "-ar", str(rate), "-"], capture_output=True, check=False)
    if proc.returncode != 0:
        raise AudioError(f"{path}: cannot decode: {proc.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 1).copy(), rate


class StreamResampler:
    """Chunk-size-invariant resampler for live audio: anti-alias FIR (kept filter state) followed by
    linear interpolation at exact rational positions. Feeding a signal in any chunking gives the same
    output samples as feeding it at once."""

    def __init__(self, rate_in: int, rate_out: int = MODEL_RATE, taps: int = 63):
        if rate_in <= 0 or rate_out <= 0:
            raise AudioError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        g = gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g  # out sample n sits at input n*down/up
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._fir = None
        if rate_in > rate_out:
            from scipy.signal import firwin

            self._fir = firwin(taps, 0.9 * rate_out / rate_in).astype(np.float64)
            self._zi = np.zeros(taps - 1)
        self._prev = None     # last input sample of the previous chunk (interpolation needs one behind)
        self._consumed = 0    # input samples seen so far
        self._next = 0        # index of the next output sample

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.up == self.down:
            return x.astype(np.float32)
        if self._fir is not None and x.size:
            from scipy.signal import lfilter

            x, self._zi = lfilter(self._fir, 1.0, x, zi=self._zi)
        base = self._consumed - (0 if self._prev is None else 1)
        seq = x if self._prev is None else np.concatenate([[self._prev], x])
        self._consumed += x.size
        if seq.size == 0:
            return np.zeros(0, np.float32)
        # output n needs input floor(n*down/up) and the one after it
        last = (self._consumed - 1) * self.up // self.down  # last n whose left neighbour exists
        if (last * self.down) % self.up and last * self.down // self.up + 1 >= self._consumed:
            last -= 1
        n = np.arange(self._next, last + 1, dtype=np.int64)
        self._next = max(self._next, last + 1)
        pos_num = n * self.down
        i = pos_num // self.up - base
        frac = (pos_num % self.up) / self.up
        right = np.minimum(i + 1, seq.size - 1)
        out = seq[i] * (1.0 - frac) + seq[right] * frac
        self._prev = seq[-1]
        return out.astype(np.float32)


def pitch_track(audio: np.ndarray, fmin: float = 70.0, fmax: float = 400.0,
                voicing: float = 0.45) -> np.ndarray:
    """f0 in Hz per 10 ms frame (0 where unvoiced) by normalised autocorrelation of 40 ms windows."""
    hop = MODEL_RATE // 100
    win = 4 * hop
    n = max(0, (audio.size - win) // hop + 1)
    if n == 0:
        return np.zeros(0, np.float32)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = audio[idx].astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, 2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]
    lo, hi = int(MODEL_RATE / fmax), int(MODEL_RATE / fmin)
    norm = ac[:, lo:hi] / (ac[:, :1] + 1e-9)
    lag = np.argmax(norm, axis=1)
    strength = norm[np.arange(n), lag]
    energy = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    voiced = (strength > voicing) & (energy > energy.max() - 35.0)
    return np.where(voiced, MODEL_RATE / (lag + lo), 0.0).astype(np.float32)
