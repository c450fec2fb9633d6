"""Offline speech synthesis for the corpus: espeak-ng, flite and festival, all to 16 kHz float32.

A ``Voice`` names one engine, one of its voices and a speaking rate / pitch; ``synthesize`` turns
text into audio with it. Engines are Debian programs called as subprocesses.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.audio import load_audio

ESPEAK_ACCENTS: tuple[str, ...] = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                                   "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_VARIANTS: tuple[str, ...] = (
    "", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2",
    "klatt3", "klatt4", "klatt6", "Alicia", "Andrea", "Annie", "Andy", "Denis", "Gene", "Jacky", "Lee",
    "Mike", "Storm", "adam", "anika", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed",
    "edward", "grandma", "grandpa", "iven", "iven2", "john", "linda", "max", "michel", "norbert", "paul",
    "quincy", "rob", "robert", "shelby", "steph", "steph2", "travis", "victor", "announcer")
FLITE_VOICES: tuple[str, ...] = ("slt", "rms", "awb", "kal16")
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "cmu_us_slt_arctic_hts")
ENGINE_PROGRAMS = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}


class SynthesisError(RuntimeError):
    """An engine failed or is missing; the message names the engine, voice and text."""


@dataclass(frozen=True)
class Voice:
    engine: str          # espeak | flite | festival
    name: str            # engine voice, e.g. "en-us+f3", "slt", "kal_diphone"
    rate: float = 1.0    # speaking-rate factor (1 = engine default; espeak: words per minute / 175)
    pitch: int = 50      # espeak pitch 0..99; flite/festival ignore it

    @property
    def source(self) -> str:
        """A readable tag stored with each clip, e.g. ``espeak:en-us+f3:r160:p50``."""
        if self.engine == "espeak":
            return f"espeak:{self.name}:r{round(175 * self.rate)}:p{self.pitch}"
        return f"{self.engine}:{self.name}:x{self.rate:.2f}"

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


def engine_available(engine: str) -> bool:
    return shutil.which(ENGINE_PROGRAMS[engine]) is not None


def flite_with_segments(text: str, voice: str = "slt") -> tuple[np.ndarray, list[tuple[str, float]]]:
    """flite speech plus its own segment end times (``-psdur``): (audio, [(ARPAbet phone, end s)]).

    flite's phones are CMU ARPAbet in lower case with ``ax`` for schwa and ``pau`` for silence.
    """
    if not engine_available("flite"):
        raise SynthesisError("flite is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        res = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(wav)],
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0 or not wav.exists():
            raise SynthesisError(f"flite:{voice}: synthesis failed for {text!r}: {res.stderr.strip()[:200]}")
        segs = []
        for item in res.stdout.split():
            name, _, end = item.rpartition(":")
            label = {"pau": "SIL", "ax": "AH"}.get(name, name.upper())
            segs.append((label, float(end)))
        return load_audio(wav), segs


def synthesize(voice: Voice, text: str) -> np.ndarray:
    """Speak ``text`` with ``voice`` -> 16 kHz mono float32."""
    if voice.engine not in ENGINE_PROGRAMS:
        raise SynthesisError(f"unknown engine {voice.engine!r}; known: {', '.join(ENGINE_PROGRAMS)}")
    if not engine_available(voice.engine):
        raise SynthesisError(f"{ENGINE_PROGRAMS[voice.engine]} is not installed (engine {voice.engine})")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(round(175 * voice.rate)), "-p", str(voice.pitch),
                   "-w", str(wav), "--", text]   # "--": a text starting with "-" is not an option
            stdin = None
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / voice.rate:.3f}",
                   "-t", text, "-o", str(wav)]
            stdin = None
        else:
            cmd = ["text2wave", "-eval", f"(voice_{voice.name})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.3f})", "-o", str(wav)]
            stdin = text
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if res.returncode != 0 or not wav.exists() or wav.stat().st_size < 100:
            raise SynthesisError(f"{voice.source}: synthesis failed for {text!r}: {res.stderr.strip()[:200]}")
        return load_audio(wav)


def flite_voices() -> list[str]:
    """The voices this flite has (``flite -lv``); flite falls back to its default voice for any other name."""
    res = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30)
    return res.stdout.partition(":")[2].split()


def check_voice(voice: Voice) -> None:
    """A ``SynthesisError`` naming the engine and voice when ``voice`` cannot speak: an unknown or missing
    engine, an unknown voice (flite: not in ``flite -lv``; espeak-ng and festival: a test word fails)."""
    if voice.engine not in ENGINE_PROGRAMS:
        raise SynthesisError(f"unknown engine {voice.engine!r}; known: {', '.join(ENGINE_PROGRAMS)}")
    if not engine_available(voice.engine):
        raise SynthesisError(f"{ENGINE_PROGRAMS[voice.engine]} is not installed (engine {voice.engine})")
    if voice.engine == "flite" and voice.name not in (known := flite_voices()):
        raise SynthesisError(f"flite has no voice {voice.name!r}; it has: {', '.join(known)}")
    try:
        synthesize(voice, "ok")
    except SynthesisError as err:
        hint = {"espeak": "espeak-ng --voices lists them; variants as en-us+f3",
                "festival": f"e.g. {', '.join(FESTIVAL_VOICES)}"}.get(voice.engine, "")
        raise SynthesisError(f"{voice.engine} cannot speak with voice {voice.name!r} ({hint}): {err}") from err
