"""Make the training corpus: synthetic and real speech, aligned, with ARKit targets at 25 fps.

Layout written under OUT (the trainer relies on it):

    manifest.yaml              recipe, counts, durations, fps, blendshape_names (ARKit order)
    clips/<id>.wav             16 kHz mono PCM16
    clips/<id>.npz             blendshapes (T, 52) float32 0..1, phones_start/phones_end (N,) s,
                               phones (N,) ARPAbet ('SIL' = silence), text, source, speaker
    splits/{train,val,test}.txt  one id per line

train: espeak-ng / flite / festival voices on our sentences, plus at most two thirds of the
Asterisk prompts (real speech); val: held-out synthetic voices on held-out sentences; test: the
other Asterisk prompts (split by prompt). Every clip goes through the same path: pocketsphinx
forced alignment -> visemes with coarticulation -> mouth curves, plus pitch-driven brows and blinks.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.audio import MODEL_RATE
from lsf_core.config import dump_config, to_dict
from lsf_core.data import sources, tts
from lsf_core.data.align import Aligner, AlignmentError
from lsf_core.data.prosody import phone_loudness, upper_face
from lsf_core.data.visemes import FPS, mouth_curves
from lsf_core.models.base import num_frames

SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    """The corpus recipe (written into manifest.yaml as ``recipe``)."""

    seed: int = 0
    synthetic_hours: float = 1.9           # espeak-ng + flite + festival speech, approximately
    val_fraction: float = 0.05             # share of synthetic clips held out (own voices and texts)
    engine_shares: dict[str, float] = field(
        default_factory=lambda: {"espeak": 0.75, "flite": 0.15, "festival": 0.10})
    espeak_rate: tuple[float, float] = (0.75, 1.35)   # x 175 words per minute
    espeak_pitch: tuple[int, int] = (25, 80)
    other_rate: tuple[float, float] = (0.8, 1.25)     # flite / festival rate factor
    val_voices: list[str] = field(default_factory=lambda: ["f4", "m6", "klatt3", "travis", "awb"])
    template_texts: int = 6000
    asterisk: bool = True
    asterisk_train_fraction: float = 2 / 3  # at most 2/3 of the prompts may join training
    asterisk_max_prompts: int = 0           # 0 = all
    workers: int = 2


@dataclass(frozen=True)
class Job:
    clip_id: str
    split: str
    text: str
    voice: tts.Voice | None = None        # None = real recording
    recording: str = ""                   # path of the real recording (G.722)


def quick_config(seed: int = 0) -> DataConfig:
    """A few minutes of audio: for tests and smoke runs."""
    return DataConfig(seed=seed, synthetic_hours=0.05, template_texts=200, asterisk_max_prompts=24)


def _estimated_seconds(text: str, rate: float) -> float:
    """Rough clip length for planning (calibrated on the engines here: about 19 characters a second)."""
    return 0.2 + len(text) / (19.0 * rate)


def plan_jobs(cfg: DataConfig, prompts: list[sources.Prompt] | None = None) -> list[Job]:
    """The full, seeded list of clips to make."""
    rng = np.random.default_rng(cfg.seed)
    texts = list(sources.SENTENCES) + sources.template_sentences(cfg.template_texts, rng)
    order = rng.permutation(len(texts))
    n_val_texts = max(1, int(round(len(texts) * cfg.val_fraction)))
    val_texts = [texts[i] for i in order[:n_val_texts]]
    train_texts = [texts[i] for i in order[n_val_texts:]]
    engines = [e for e, share in cfg.engine_shares.items() if share > 0 and tts.engine_available(e)]
    if not engines:
        raise RuntimeError("no speech engine is installed (espeak-ng, flite, festival)")
    shares = np.array([cfg.engine_shares[e] for e in engines], np.float64)
    shares /= shares.sum()
    jobs: list[Job] = []
    budget = {"train": cfg.synthetic_hours * 3600 * (1 - cfg.val_fraction),
              "val": cfg.synthetic_hours * 3600 * cfg.val_fraction}
    for split, pool in (("train", train_texts), ("val", val_texts)):
        total, k = 0.0, 0
        while total < budget[split]:
            engine = engines[rng.choice(len(engines), p=shares)]
            voice = _pick_voice(engine, split, cfg, rng)
            text = pool[int(rng.integers(len(pool)))]
            jobs.append(Job(f"{split[:2]}{k:05d}_{engine}", split, text, voice))
            total += _estimated_seconds(text, voice.rate)
            k += 1
    if prompts:
        train, test = sources.split_prompts(prompts, cfg.seed, cfg.asterisk_train_fraction)
        for split, group in (("train", train), ("test", test)):
            for p in group:
                jobs.append(Job("ast_" + p.name.replace("/", "-"), split, p.text, None, str(p.path)))
    return jobs


def _pick_voice(engine: str, split: str, cfg: DataConfig, rng: np.random.Generator) -> tts.Voice:
    held = set(cfg.val_voices)
    if engine == "espeak":
        variants = [v for v in tts.ESPEAK_VARIANTS if (v in held) == (split == "val")] or [""]
        accent = tts.ESPEAK_ACCENTS[int(rng.integers(len(tts.ESPEAK_ACCENTS)))]
        variant = variants[int(rng.integers(len(variants)))]
        name = f"{accent}+{variant}" if variant else accent
        rate = float(rng.uniform(*cfg.espeak_rate))
        return tts.Voice("espeak", name, round(rate * 175) / 175, int(rng.integers(cfg.espeak_pitch[0],
                                                                                     cfg.espeak_pitch[1] + 1)))
    names = tts.FLITE_VOICES if engine == "flite" else tts.FESTIVAL_VOICES
    pool = [v for v in names if (v in held) == (split == "val")] or list(names)
    return tts.Voice(engine, pool[int(rng.integers(len(pool)))], round(float(rng.uniform(*cfg.other_rate)), 2))


def make_targets(audio: np.ndarray, phones, starts, ends, rng: np.random.Generator) -> np.ndarray:
    """(T, 52) ARKit targets at 25 fps for aligned audio: mouth from visemes, brows and blinks."""
    n = num_frames(audio.size, FPS, MODEL_RATE)
    gains = phone_loudness(audio, phones, starts, ends)
    mouth = mouth_curves(phones, starts, ends, n, FPS, gains=gains)
    upper = upper_face(audio, phones, starts, ends, n, rng, FPS)
    return np.clip(mouth + upper, 0.0, 1.0).astype(np.float32)


_ALIGNER: Aligner | None = None


def _make_clip(args: tuple[Job, Path, int, int]) -> dict:
    """Worker: synthesize or decode, align, make targets, write the WAV and NPZ."""
    global _ALIGNER
    job, out, seed, index = args
    if _ALIGNER is None:
        _ALIGNER = Aligner()
    try:
        if job.voice is None:
            audio = sources.decode_g722(Path(job.recording))
            source, speaker = "asterisk", sources.ASTERISK_SPEAKER
        else:
            audio = tts.synthesize(job.voice, job.text)
            source, speaker = job.voice.source, job.voice.speaker
        al = _ALIGNER.align(audio, job.text)
    except (AlignmentError, tts.SynthesisError, OSError, ValueError) as err:
        return {"id": job.clip_id, "engine": job.voice.engine if job.voice else "asterisk",
                "error": f"{type(err).__name__}: {err}"}
    rng = np.random.default_rng([seed, index])
    targets = make_targets(audio, al.phones, al.starts, al.ends, rng)
    sf.write(str(out / "clips" / f"{job.clip_id}.wav"), audio, MODEL_RATE, subtype="PCM_16")
    np.savez_compressed(out / "clips" / f"{job.clip_id}.npz", blendshapes=targets,
                        phones_start=al.starts, phones_end=al.ends, phones=np.array(al.phones, dtype=np.str_),
                        text=np.array(job.text), source=np.array(source), speaker=np.array(speaker))
    return {"id": job.clip_id, "split": job.split, "seconds": audio.size / MODEL_RATE, "source": source,
            "engine": source.split(":")[0], "phone_pass": al.phone_pass}


def make_dataset(cfg: DataConfig, out: Path, progress: bool = True) -> dict:
    """Make every clip of the recipe under ``out``; returns the manifest (also written)."""
    from tqdm import tqdm

    started = time.time()
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "splits").mkdir(exist_ok=True)
    prompts = None
    if cfg.asterisk:
        sources.ensure_asterisk()
        prompts = sources.asterisk_prompts()
        if cfg.asterisk_max_prompts:
            prompts = prompts[: cfg.asterisk_max_prompts]
    jobs = plan_jobs(cfg, prompts)
    tasks = [(job, out, cfg.seed, i) for i, job in enumerate(jobs)]
    results = []
    bar = tqdm(total=len(tasks), desc="lsf data make", unit="clip", disable=not progress)
    if cfg.workers > 1:
        with mp.get_context("fork").Pool(cfg.workers) as pool:
            for r in pool.imap_unordered(_make_clip, tasks, chunksize=4):
                results.append(r)
                bar.update()
    else:
        for t in tasks:
            results.append(_make_clip(t))
            bar.update()
    bar.close()
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["id"])
    failed = sorted((r for r in results if "error" in r), key=lambda r: r["id"])
    for split in SPLITS:
        ids = [r["id"] for r in ok if r["split"] == split]
        (out / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    manifest = {
        "fps": FPS,
        "sample_rate": MODEL_RATE,
        "frame_time": "frame i covers [i/fps, (i+1)/fps); T = ceil(samples * fps / sample_rate)",
        "blendshape_names": list(ARKIT_NAMES),
        "recipe": to_dict(cfg),
        "counts": {s: sum(r["split"] == s for r in ok) for s in SPLITS},
        "hours": {s: round(sum(r["seconds"] for r in ok if r["split"] == s) / 3600, 4) for s in SPLITS},
        "hours_by_engine": {e: round(sum(r["seconds"] for r in ok if r["engine"] == e) / 3600, 4)
                            for e in sorted({r["engine"] for r in ok})},
        "phone_alignment_rate": round(sum(r["phone_pass"] for r in ok) / max(1, len(ok)), 4),
        "failed": len(failed),
        "failed_by_engine": {e: sum(r["engine"] == e for r in failed) for e in sorted({r["engine"] for r in failed})},
        "failures": [f"{r['id']}: {r['error']}" for r in failed[:50]],
        "make_seconds": round(time.time() - started, 1),
        "attribution": "Asterisk prompts: voice of Allison Smith, asterisk-core-sounds-en (Digium), CC-BY-SA-3.0",
    }
    dump_config(manifest, out / "manifest.yaml")
    return manifest


def load_clip(root: str | Path, clip_id: str) -> dict:
    """One clip: audio (float32, 16 kHz) plus the NPZ's arrays and strings."""
    root = Path(root)
    npz = root / "clips" / f"{clip_id}.npz"
    if not npz.exists():
        raise FileNotFoundError(f"{npz}: no such clip in dataset {root}")
    with np.load(npz, allow_pickle=False) as z:
        clip = {k: z[k] for k in z.files}
    for key in ("text", "source", "speaker"):
        clip[key] = str(clip[key])
    audio, rate = sf.read(str(root / "clips" / f"{clip_id}.wav"), dtype="float32")
    if rate != MODEL_RATE:
        raise ValueError(f"{root / 'clips' / clip_id}.wav: sample rate {rate}, expected {MODEL_RATE}")
    clip["audio"] = audio
    return clip


def list_split(root: str | Path, split: str) -> list[str]:
    """Clip ids of ``split`` (train, val or test)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(root) / "splits" / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no split file (make the dataset with `lsf data make`)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
