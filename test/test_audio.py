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
