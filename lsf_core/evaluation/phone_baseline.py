"""A phone-recogniser baseline: pocketsphinx allphone decoding (phones from its own wheel's English model, no
transcript) -> our viseme rules (``lsf_core.data.visemes.mouth_curves``, with the training corpus's per-phone
loudness gains) -> ARKit mouth curves at the model rate. What a plain phone recogniser gives; the learned model
has to beat it."""
from __future__ import annotations

import os

import numpy as np

from lsf_core.audio import MODEL_RATE
from lsf_core.data.align import FRAME_S, PHONES, SIL
from lsf_core.data.prosody import phone_loudness
from lsf_core.data.visemes import mouth_curves
from lsf_core.models.base import num_frames


class PhoneBaseline:
    """pocketsphinx allphone (the wheel's ``en-us-phone.lm.bin``), decoder options left at their defaults."""

    def __init__(self):
        try:
            import pocketsphinx
        except ImportError as err:  # pragma: no cover - setup.py's "data" extra installs it
            raise RuntimeError("pocketsphinx is not installed: pip install 'pocketsphinx>=5'") from err
        model = os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us-phone.lm.bin")
        self._decoder = pocketsphinx.Decoder(samprate=MODEL_RATE, loglevel="FATAL", allphone=model, lm=None)

    def phones(self, audio: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Recognised phones of 16 kHz mono ``audio``: labels (ARPAbet; fillers and noise as SIL), starts, ends (s)."""
        d = self._decoder
        d.start_utt()
        d.process_raw((np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes(), full_utt=True)
        d.end_utt()
        known = set(PHONES)
        phones, starts, ends = [], [], []
        for s in d.seg():
            phones.append(s.word if s.word in known else SIL)
            starts.append(s.start_frame * FRAME_S)
            ends.append((s.end_frame + 1) * FRAME_S)
        return phones, np.array(starts), np.array(ends)

    def animate(self, audio: np.ndarray, fps: float = 25.0) -> np.ndarray:
        """(T, 52) ARKit weights, frame k at ``k / fps`` s (T = the model's frame count for the audio)."""
        n = num_frames(audio.size, fps, MODEL_RATE)
        phones, starts, ends = self.phones(audio)
        gains = phone_loudness(audio, phones, starts, ends)
        # mouth_curves samples frame centres ((k + 0.5) / fps): shift by half a frame onto the k / fps grid
        half = 0.5 / fps
        return mouth_curves(phones, starts + half, ends + half, n, int(round(fps)), gains=gains)
