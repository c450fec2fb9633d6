"""Forced alignment of speech to its transcript with pocketsphinx -> ARPAbet phone segments.

One path for every source (synthetic or real): the transcript is normalised into words, words
missing from pocketsphinx's CMU dictionary get a pronunciation from espeak-ng (IPA -> ARPAbet),
a word-level pass places the words (a linear grammar with a pause at punctuation), a second
pass places the phones (pocketsphinx's state aligner; where it gives up, a linear grammar of
one-phone words; where that fails too, each word's span split in proportion to typical phone
lengths), and long quiet stretches become ``SIL``.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import numpy as np

from lsf_core.audio import MODEL_RATE

SIL = "SIL"
PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW",
    "V", "W", "Y", "Z", "ZH", SIL)
FRAME_S = 0.01          # pocketsphinx frame shift
PAUSE_WORD = "pau_"     # a dictionary word pronounced as silence, placed at punctuation
_PHONE_WORD = "ph_"     # prefix of one-phone dictionary words (the phone-grammar fallback)
_DECODERS: dict[str, dict] = {
    "word": {"bestpath": False},
    "wide": {"bestpath": False, "beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80},
    "phone": {"bestpath": True},
}

# espeak-ng (en-us) IPA -> ARPAbet, longest symbols first when matching.
_IPA: dict[str, tuple[str, ...]] = {
    "aɪə": ("AY", "ER"), "aʊ": ("AW",), "aɪ": ("AY",), "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",),
    "ɔɪ": ("OY",), "ɪə": ("IH", "R"), "eə": ("EH", "R"), "ʊə": ("UH", "R"), "tʃ": ("CH",), "dʒ": ("JH",),
    "ɑ": ("AA",), "ɒ": ("AA",), "æ": ("AE",), "a": ("AE",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",),
    "ɚ": ("ER",), "ɜ": ("ER",), "ɝ": ("ER",), "ɔ": ("AO",), "ɛ": ("EH",), "e": ("EH",), "ɪ": ("IH",),
    "ᵻ": ("IH",), "i": ("IY",), "ʊ": ("UH",), "u": ("UW",), "o": ("OW",),
    "b": ("B",), "d": ("D",), "ð": ("DH",), "f": ("F",), "ɡ": ("G",), "g": ("G",), "h": ("HH",),
    "k": ("K",), "l": ("L",), "ɫ": ("L",), "m": ("M",), "n": ("N",), "ŋ": ("NG",), "p": ("P",),
    "ɹ": ("R",), "r": ("R",), "s": ("S",), "ʃ": ("SH",), "t": ("T",), "ɾ": ("D",), "ʔ": ("T",),
    "θ": ("TH",), "v": ("V",), "w": ("W",), "j": ("Y",), "z": ("Z",), "ʒ": ("ZH",), "x": ("K",),
}
_IPA_KEYS = sorted(_IPA, key=len, reverse=True)
_IPA_IGNORED = set("ˈˌːˑ̩̃ -‿.|")
_SYMBOLS = {"*": " star ", "#": " pound ", "&": " and ", "%": " percent ", "@": " at ", "+": " plus "}


class AlignmentError(RuntimeError):
    """The transcript could not be aligned to the audio; the message says which and why."""


@dataclass
class Alignment:
    """Phone segments covering the audio from 0 to its end (gaps are ``SIL``)."""

    phones: list[str]
    starts: np.ndarray   # (N,) float32 seconds
    ends: np.ndarray     # (N,) float32 seconds
    words: list[tuple[str, float, float]]
    phone_pass: bool     # True when pocketsphinx placed the phones, False for the in-word fallback


def normalize_words(text: str) -> list[str]:
    """Transcript -> lower-case word tokens with ``PAUSE_WORD`` at punctuation (none at the ends)."""
    t = text.lower()
    t = re.sub(r"\[[^\]]*\]|<[^>]*>", " ", t)      # [beep tone], <beep ascending>: stage directions
    t = re.sub(r"(\d)\.(\d)", r"\1 point \2", t)    # 28.8 -> 28 point 8
    for k, v in _SYMBOLS.items():
        t = t.replace(k, v)
    seq: list[str] = []
    for tok in re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[,.;:?!]", t.replace("-", " ")):
        if tok[0].isalnum():
            seq.append(tok)
        elif seq and seq[-1] != PAUSE_WORD:
            seq.append(PAUSE_WORD)
    while seq and seq[-1] == PAUSE_WORD:
        seq.pop()
    return seq


def ipa_to_arpabet(ipa: str) -> list[str]:
    """espeak-ng IPA (one word or several) -> ARPAbet phones; unknown symbols are skipped."""
    out: list[str] = []
    i = 0
    while i < len(ipa):
        if ipa[i] in _IPA_IGNORED:
            i += 1
            continue
        for key in _IPA_KEYS:
            if ipa.startswith(key, i):
                out.extend(_IPA[key])
                i += len(key)
                break
        else:
            i += 1
    return out


def espeak_pronounce(word: str, voice: str = "en-us") -> list[str]:
    """Pronunciation of ``word`` (also digits) in ARPAbet, from espeak-ng's IPA."""
    res = subprocess.run(["espeak-ng", "-q", "-v", voice, "--ipa", word], capture_output=True, text=True,
                         check=True)
    return ipa_to_arpabet(res.stdout.strip())


def speech_extent(audio: np.ndarray, rel_db: float = -35.0, margin_s: float = 0.08) -> tuple[int, int]:
    """(first, last) sample of the audible part: 10 ms frames within ``rel_db`` of the loudest."""
    e = _frame_db(audio)
    if e.size == 0 or e.max() < -70.0:   # nothing above -70 dBFS: digital silence
        return 0, 0
    loud = np.nonzero(e > e.max() + rel_db)[0]
    hop = int(FRAME_S * MODEL_RATE)
    a = max(0, loud[0] * hop - int(margin_s * MODEL_RATE))
    b = min(audio.size, (loud[-1] + 1) * hop + int(margin_s * MODEL_RATE))
    return a, b


def _frame_db(audio: np.ndarray) -> np.ndarray:
    hop = int(FRAME_S * MODEL_RATE)
    n = audio.size // hop
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)


class Aligner:
    """A pocketsphinx decoder (English model from the wheel) set up for forced alignment."""

    def __init__(self, min_pause_s: float = 0.15, pause_db: float = -32.0):
        self.min_pause_s = min_pause_s
        self.pause_db = pause_db
        self._decoders: dict[str, object] = {}
        self._added: dict[str, str] = {}

    def _get(self, kind: str):
        """``word``: no lattice rescoring (bestpath drops trailing words of the grammar); ``wide``: the
        same with very wide beams, the retry for utterances the default beams lose; ``phone``: with
        bestpath (the state aligner needs it). No free fillers in any."""
        if kind not in self._decoders:
            try:
                from pocketsphinx import Decoder
            except ImportError as e:  # pragma: no cover - setup.py's "data" extra installs it
                raise AlignmentError("pocketsphinx is not installed: pip install 'pocketsphinx>=5'") from e
            options = _DECODERS[kind]
            d = Decoder(samprate=MODEL_RATE, loglevel="FATAL", fsgusefiller=False, **options)
            d.add_word(PAUSE_WORD, SIL, True)
            for p in PHONES:
                d.add_word(_PHONE_WORD + p.lower(), p, False)
            d.add_word(_PHONE_WORD + "pause", SIL, True)
            for word, phones in self._added.items():
                d.add_word(word, phones, True)
            self._decoders[kind] = d
        return self._decoders[kind]

    @property
    def decoder(self):
        return self._get("word")

    def pronounce(self, word: str) -> list[str]:
        """The decoder's pronunciation of ``word``, adding espeak-ng's when the dictionary lacks it."""
        d = self.decoder
        known = d.lookup_word(word)
        if known:
            return known.split()
        phones = espeak_pronounce(word)
        if not phones:
            raise AlignmentError(f"no pronunciation for word {word!r}")
        self._added[word] = " ".join(phones)
        for dec in self._decoders.values():
            dec.add_word(word, self._added[word], True)
        return phones

    def align(self, audio: np.ndarray, text: str) -> Alignment:
        """Align 16 kHz mono float ``audio`` to ``text``; raises AlignmentError when it cannot."""
        seq = normalize_words(text)
        words = [w for w in seq if w != PAUSE_WORD]
        if not words:
            raise AlignmentError(f"transcript {text!r} has no words to align")
        pron = {w: self.pronounce(w) for w in words}
        a, b = speech_extent(audio)
        if b - a < int(0.1 * MODEL_RATE):
            raise AlignmentError(f"no audible speech for {text!r}")
        pcm = (np.clip(audio[a:b], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        segs, grammar = None, ""
        # pauses at punctuation; words only; optional silence at both ends
        grammars = (" ".join(seq), " ".join(words), f"[{PAUSE_WORD}] {' '.join(words)} [{PAUSE_WORD}]")
        for kind in ("word", "wide"):
            for grammar in grammars:
                segs = self._word_pass(self._get(kind), pcm, grammar, words)
                if segs is not None:
                    break
            if segs is not None:
                break
        if segs is None:
            raise AlignmentError(f"pocketsphinx could not place the words of {text!r}")
        phones = self._phone_pass(pcm, grammar, words)
        if phones is None:
            phones = self._phone_grammar_pass(pcm, seq, pron)
        phone_pass = phones is not None
        if phones is None:
            phones = _split_words(segs, pron)
        offset = a / MODEL_RATE
        phones = [(p, s + offset, e + offset) for p, s, e in phones]
        word_times = [(w, s + offset, e + offset) for w, s, e in segs if w != PAUSE_WORD]
        pauses = self._pauses(audio)
        phones = _carve(phones, pauses, silence=True)
        return _fill(phones, audio.size / MODEL_RATE, _carve(word_times, pauses, silence=False), phone_pass)

    @staticmethod
    def _word_pass(d, pcm: bytes, grammar: str, words: list[str]) -> list[tuple[str, float, float]] | None:
        segs = _decode_grammar(d, "align", grammar, pcm)
        if segs is None:
            return None
        keep = set(words) | {PAUSE_WORD}
        out = [(_base(w), s, e) for w, s, e in segs if _base(w) in keep]
        return out if [w for w, _, _ in out if w != PAUSE_WORD] == words else None

    def _phone_grammar_pass(self, pcm: bytes, seq: list[str], pron) -> list[tuple[str, float, float]] | None:
        """Phones as one-phone words in a linear grammar: less exact at boundaries, rarely fails."""
        items = []
        for w in seq:
            items += [_PHONE_WORD + "pause"] if w == PAUSE_WORD else [_PHONE_WORD + p.lower() for p in pron[w]]
        segs = _decode_grammar(self.decoder, "phones", " ".join(items), pcm)
        if segs is None:
            return None
        out = [(_base(w), s, e) for w, s, e in segs if w.startswith(_PHONE_WORD)]
        if [w for w, _, _ in out] != items:
            return None
        return [(SIL if w == _PHONE_WORD + "pause" else w[len(_PHONE_WORD):].upper(), s, e) for w, s, e in out]

    def _phone_pass(self, pcm: bytes, grammar: str, words: list[str]) -> list[tuple[str, float, float]] | None:
        d = self._get("phone")
        try:
            if self._word_pass(d, pcm, grammar, words) is None:
                return None
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            al = d.get_alignment()
            return [(p.name, p.start * FRAME_S, (p.start + p.duration) * FRAME_S) for p in al.phones()]
        except RuntimeError:  # the state aligner gives up on some utterances; the caller falls back
            return None

    def _pauses(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Quiet runs of at least ``min_pause_s`` (seconds), ``pause_db`` below the loud frames."""
        db = _frame_db(audio)
        if db.size == 0:
            return []
        quiet = db < np.percentile(db, 95) + self.pause_db
        return [(r0 * FRAME_S, r1 * FRAME_S) for r0, r1 in _runs(quiet, int(round(self.min_pause_s / FRAME_S)))]


def _carve(segs: list[tuple[str, float, float]], pauses, silence: bool) -> list[tuple[str, float, float]]:
    """Cut the pauses out of labelled segments; segments wholly inside a pause vanish unless they are
    the only trace of a word (``silence=False``: word spans are only trimmed). With ``silence`` the
    pauses become SIL segments."""
    out = list(segs)
    for s, e in pauses:
        nxt = []
        for p, ps, pe in out:
            if pe <= s or ps >= e:
                nxt.append((p, ps, pe))
            elif ps < s and pe > e:            # pause inside: keep the longer side
                nxt.append((p, ps, s) if s - ps >= pe - e else (p, e, pe))
            elif ps < s:
                nxt.append((p, ps, s))
            elif pe > e:
                nxt.append((p, e, pe))
            elif not silence:
                nxt.append((p, ps, pe))        # a word never disappears
        if silence:
            nxt.append((SIL, s, e))
        out = sorted(nxt, key=lambda x: x[1])
    return out


def _base(word: str) -> str:
    """Dictionary variant ``to(3)`` -> ``to``."""
    return word.split("(", 1)[0]


def _decode_grammar(d, name: str, rule: str, pcm: bytes) -> list[tuple[str, float, float]] | None:
    """Decode ``pcm`` constrained to the JSGF rule ``rule``: (word, start s, end s) segments, None on failure."""
    d.add_jsgf_string(name, f"#JSGF V1.0;\ngrammar {name};\npublic <s> = {rule};\n")
    d.activate_search(name)
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    segs = d.seg()
    if segs is None:
        return None
    return [(s.word, s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S) for s in segs]


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) index runs of True in ``mask`` at least ``min_len`` long."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2]) if e - s >= min_len]


_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def _split_words(segs, pron) -> list[tuple[str, float, float]]:
    """Fallback phone placement: each word's span split in proportion to typical phone lengths."""
    out = []
    for w, s, e in segs:
        if w == PAUSE_WORD:
            out.append((SIL, s, e))
            continue
        ph = pron[w]
        weights = np.array([2.0 if p in _VOWELS else 1.0 for p in ph])
        edges = s + (e - s) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        out.extend((p, float(a), float(b)) for p, a, b in zip(ph, edges[:-1], edges[1:]))
    return out


def _fill(phones, total_s: float, words, phone_pass: bool) -> Alignment:
    """Merge SIL neighbours, fill gaps (and the ends) with SIL, clip to [0, total_s]."""
    segs: list[list] = []
    t = 0.0
    for p, s, e in phones:
        p = SIL if p not in PHONES else p
        s, e = max(s, t), min(e, total_s)
        if e <= s:
            continue
        if s > t + 1e-6:
            segs.append([SIL, t, s])
        segs.append([p, s, e])
        t = e
    if total_s > t + 1e-6:
        segs.append([SIL, t, total_s])
    merged: list[list] = []
    for seg in segs:
        if merged and seg[0] == SIL and merged[-1][0] == SIL:
            merged[-1][2] = seg[2]
        else:
            merged.append(seg)
    return Alignment(phones=[m[0] for m in merged],
                     starts=np.array([m[1] for m in merged], np.float32),
                     ends=np.array([m[2] for m in merged], np.float32),
                     words=words, phone_pass=phone_pass)


def boundary_errors(ref: Alignment, hyp: Alignment) -> np.ndarray:
    """|end time difference| (s) of every phone the two alignments share, matched in sequence order.

    Phones are matched with a longest-common-subsequence alignment of the labels, silence excluded,
    so a few pronunciation differences between reference and aligner do not shift the comparison.
    """
    from difflib import SequenceMatcher

    r = [(p, e) for p, e in zip(ref.phones, ref.ends) if p != SIL]
    h = [(p, e) for p, e in zip(hyp.phones, hyp.ends) if p != SIL]
    sm = SequenceMatcher(a=[p for p, _ in r], b=[p for p, _ in h], autojunk=False)
    errs = [abs(float(r[b.a + k][1]) - float(h[b.b + k][1]))
            for b in sm.get_matching_blocks() for k in range(b.size)]
    return np.array(errs, np.float64)
