"""Audio helpers: PCM decoding, file loading at any rate/channels, chunk-invariant resampling."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lsf_core.audio import AudioError, StreamResampler, decode_pcm, load_audio, to_float


def test_decode_pcm_formats():
    x = np.array([0, 16384, -32768, 32767], "<i2")
    out = decode_pcm(x.tobytes(), "S16LE", 1)
    assert out.shape == (4, 1) and out[1, 0] == pytest.approx(0.5) and out[2, 0] == -1.0
    stereo = decode_pcm(np.arange(8, dtype="<f4").tobytes(), "F32LE", 2)
    assert stereo.shape == (4, 2) and stereo[1, 1] == 3.0
    with pytest.raises(AudioError, match="not a whole number"):
        decode_pcm(b"\x00\x01\x02", "S16LE", 1)
    with pytest.raises(AudioError, match="unknown sample format"):
        decode_pcm(b"\x00\x00", "S24", 1)


def test_to_float_rejects_nan():
    with pytest.raises(AudioError, match="NaN"):
        to_float(np.array([0.0, np.nan], np.float32))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_stream_resampler_is_chunk_invariant(rate, rng):
    x = rng.standard_normal(rate * 2)
    whole = StreamResampler(rate)(x)
    r, parts, pos = StreamResampler(rate), [], 0
    while pos < x.size:
        n = int(rng.integers(1, 3000))
        parts.append(r(x[pos:pos + n]))
        pos += n
    chunked = np.concatenate(parts)
    assert abs(whole.size - 32000) <= 1 and np.array_equal(whole, chunked)


def test_stream_resampler_keeps_a_tone(rng):
    rate = 48000
    t = np.arange(rate) / rate
    y = StreamResampler(rate)(np.sin(2 * np.pi * 300 * t))
    spectrum = np.abs(np.fft.rfft(y[1000:-1000]))
    freqs = np.fft.rfftfreq(y[1000:-1000].size, 1 / 16000)
    assert abs(freqs[spectrum.argmax()] - 300) < 3


def test_load_audio_any_rate_and_channels(tmp_path, speech_wav):
    ref = load_audio(speech_wav)
    stereo = np.stack([ref, ref], 1)
    path = tmp_path / "stereo44.flac"
    from lsf_core.audio import resample

    sf.write(str(path), resample(stereo[:, 0], 16000, 44100)[:, None].repeat(2, 1), 44100)
    back = load_audio(path)
    assert abs(back.size - ref.size) < 10
    n = min(back.size, ref.size)
    assert np.corrcoef(back[:n], ref[:n])[0, 1] > 0.99
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)


def test_downmix_averages_distinct_channels(rng):
    """Kills: downmix taking one channel (or summing) instead of the mean; every other multi-channel test
    feeds identical channels, which cannot tell them apart."""
    from lsf_core.audio import downmix

    left = rng.standard_normal(1000).astype(np.float32)
    right = np.zeros(1000, np.float32)
    third = -left
    np.testing.assert_allclose(downmix(np.stack([left, right], 1)), left / 2, atol=1e-7)
    np.testing.assert_allclose(downmix(np.stack([left, right, third], 1)), 0.0, atol=1e-7)
    np.testing.assert_array_equal(downmix(left), left)


def test_a_stereo_file_with_one_silent_channel_loads_at_half_amplitude(tmp_path, speech_wav):
    """The file path end to end: a silent right channel halves the mono signal (mean), it does not vanish or
    double. Kills: channel 0 taken, channels summed."""
    ref = load_audio(speech_wav)
    path = tmp_path / "one_sided.wav"
    sf.write(str(path), np.stack([ref, np.zeros_like(ref)], 1), 16000)
    np.testing.assert_allclose(load_audio(path), ref / 2, atol=1e-4)
    path = tmp_path / "other_side.wav"
    sf.write(str(path), np.stack([np.zeros_like(ref), ref], 1), 16000)
    np.testing.assert_allclose(load_audio(path), ref / 2, atol=1e-4)


def test_to_float_scales_every_sample_type_exactly():
    """Full scale of each integer type maps to [-1, 1) exactly; unsigned types are centred; floats pass as
    float32. Kills: a wrong full scale (max instead of max + 1), a missing offset for unsigned types, the
    float path left as float64, a non-audio dtype accepted."""
    np.testing.assert_array_equal(to_float(np.array([-32768, 0, 16384, 32767], np.int16)),
                                  np.array([-1.0, 0.0, 0.5, 32767 / 32768], np.float32))
    np.testing.assert_array_equal(to_float(np.array([-128, 64], np.int8)), np.array([-1.0, 0.5], np.float32))
    np.testing.assert_allclose(to_float(np.array([-2**31, 2**30], np.int32)), [-1.0, 0.5], rtol=1e-7)
    np.testing.assert_array_equal(to_float(np.array([0, 128, 192, 255], np.uint8)),
                                  np.array([-1.0, 0.0, 0.5, 127 / 128], np.float32))
    np.testing.assert_array_equal(to_float(np.array([0, 32768], np.uint16)), np.array([-1.0, 0.0], np.float32))
    out = to_float(np.array([0.25, -0.5], np.float64))
    assert out.dtype == np.float32 and out.tolist() == [0.25, -0.5]
    assert to_float(np.array([7], np.int16)).dtype == np.float32
    with pytest.raises(AudioError, match="^mic: samples of dtype <U1 are not audio"):
        to_float(np.array(["a"]), "mic")
    with pytest.raises(AudioError, match="^mic: samples contain NaN or Inf"):
        to_float(np.array([np.inf], np.float32), "mic")


@pytest.mark.parametrize("fmt, dtype, values, expected", [
    ("S16LE", "<i2", [-32768, 16384], [-1.0, 0.5]),
    ("S32LE", "<i4", [-2**31, 2**30], [-1.0, 0.5]),
    ("S8", "i1", [-128, 64], [-1.0, 0.5]),
    ("U8", "u1", [0, 192, 128], [-1.0, 0.5, 0.0]),
    ("F32LE", "<f4", [0.25, -1.0], [0.25, -1.0]),
    ("F64LE", "<f8", [0.125, 1.0], [0.125, 1.0]),
])
def test_decode_pcm_every_format_exactly(fmt, dtype, values, expected):
    """Kills: a wrong scale or U8 offset, the default format or channel count changed, bytes read as another
    width."""
    raw = np.array(values, dtype).tobytes()
    out = decode_pcm(raw, fmt, 1)
    assert out.dtype == np.float32 and out.shape == (len(values), 1)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-7)
    np.testing.assert_array_equal(decode_pcm(np.frombuffer(raw, np.uint8), fmt, 1), out)   # an array of bytes too
    if fmt == "S16LE":
        np.testing.assert_array_equal(decode_pcm(raw), out)   # the defaults: S16LE, one channel


def test_decode_pcm_interleaving_and_errors():
    """Frames are interleaved (L R L R ...). Kills: a channel-major reshape, a lost channel check, an error
    without the source's name."""
    lr = decode_pcm(np.array([1, -1, 2, -2, 3, -3], "<i2").tobytes(), "S16LE", 2, "mic")
    np.testing.assert_array_equal(lr * 32768, [[1, -1], [2, -2], [3, -3]])
    with pytest.raises(AudioError, match="^mic: 6 bytes is not a whole number of S32LE frames of 1 channel"):
        decode_pcm(b"\x00" * 6, "S32LE", 1, "mic")
    with pytest.raises(AudioError, match="^mic: 8 bytes is not a whole number of S16LE frames of 3 channel"):
        decode_pcm(b"\x00" * 8, "S16LE", 3, "mic")
    with pytest.raises(AudioError, match="^mic: channel count must be >= 1, got 0"):
        decode_pcm(b"\x00\x00", "S16LE", 0, "mic")
    with pytest.raises(AudioError, match="^mic: unknown sample format 's16le'; known: S16LE, S32LE"):
        decode_pcm(b"\x00\x00", "s16le", 1, "mic")


def test_resample_lengths_values_and_errors(rng):
    """Integer ratios are exact polyphase resampling (scipy's ``resample_poly``); the same rate and empty input
    pass through as float32. Kills: the ratio reduced wrongly, a float (not integer) ratio, the pass-through
    taken for any rate, a rate of 0 or 1 accepted."""
    from scipy.signal import resample_poly

    from lsf_core.audio import resample

    x = rng.standard_normal(4410).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and y.size == 1600
    np.testing.assert_allclose(y, resample_poly(x.astype(np.float64), 160, 441), atol=1e-6)
    assert resample(x[:800], 8000, 16000).size == 1600
    same = resample(x.astype(np.float64), 16000, 16000)
    assert same.dtype == np.float32 and np.array_equal(same, x)
    assert resample(np.zeros(0, np.float32), 8000).size == 0
    for bad in (0, -8000):
        with pytest.raises(AudioError, match=f"sample rate must be positive, got {bad}"):
            resample(x, bad)
    assert resample(x[:10], 1, 16000).size == 160000  # 1 Hz is odd but valid: 10 s


def test_stream_resampler_values():
    """Upsampling interpolates linearly between input samples; downsampling keeps a constant signal at its
    level (unit DC gain) once the filter has settled. Kills: wrong interpolation weights, an FIR with the wrong
    gain, outputs for positions not yet covered by input."""
    up = StreamResampler(8000, 16000)
    ramp = np.arange(10, dtype=np.float64)
    out = np.concatenate([up(ramp[:3]), up(ramp[3:])])
    np.testing.assert_allclose(out, np.arange(19) / 2.0, atol=1e-6)    # 0, 0.5, 1, ... 9: never past the input
    assert up(np.zeros(0)).size == 0
    down = StreamResampler(48000, 16000)
    level = down(np.full(4800, 0.3))
    assert level.size == 1600 and np.allclose(level[100:], 0.3, atol=1e-3)
    third = StreamResampler(16000, 16000)
    assert np.array_equal(third(np.array([0.1, 0.2])), np.array([0.1, 0.2], np.float32))
    with pytest.raises(AudioError, match="sample rates must be positive, got 0 -> 16000"):
        StreamResampler(0)
    with pytest.raises(AudioError, match="got 16000 -> 0"):
        StreamResampler(16000, 0)


def test_formats_soundfile_cannot_read_go_through_ffmpeg(tmp_path, speech_wav):
    """An AAC file (libsndfile has no AAC) decodes with ffmpeg at the asked rate, mono; an empty file and a file
    that is not audio are errors naming the file. Kills: the ffmpeg fallback's rate, channel or sample-format
    arguments changed, its failure check inverted, an empty file accepted."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    ref = load_audio(speech_wav, 16000)
    m4a = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(speech_wav), "-ac", "2", "-ar", "44100", "-c:a", "aac",
                    str(m4a)], check=True)
    got = load_audio(m4a, 16000)
    assert got.dtype == np.float32 and got.ndim == 1 and abs(got.size - ref.size) < 0.05 * 16000
    lag = int(np.argmax(np.correlate(got[:8000], ref[:4000], "valid")))   # AAC adds a short encoder delay
    n = min(ref.size, got.size - lag)
    assert np.corrcoef(got[lag:lag + n], ref[:n])[0, 1] > 0.95
    assert abs(load_audio(m4a, 8000).size - ref.size / 2) < 0.05 * 8000
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"definitely not audio" * 10)
    with pytest.raises(AudioError, match=f"^{junk}: cannot decode"):
        load_audio(junk)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=f"^{empty}: the file holds no samples"):
        load_audio(empty)
