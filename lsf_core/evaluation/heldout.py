"""``lsf evaluate``: the default model judged on real human speech it never heard.

The held-out part of the Asterisk prompts (Debian ``asterisk-core-sounds-en-g722``, one human speaker;
split by prompt with the corpus seed, so no held-out prompt is in the training data) is decoded,
aligned by pocketsphinx and given procedural targets exactly like the training corpus. The model runs
through the live code path (``StreamingAnimator.animate``, voice-activity gate included) and is
judged by four checks:

- jawOpen correlation with the procedural target (all frames of all prompts) >= 0.75;
- bilabial closure: at the middle frame of /p b m/ the lip aperture (jawOpen - mouthClose) is under
  half the mean aperture at open-vowel middles, in >= 85 % of cases (``lsf_core.evaluation.metrics.lip_sync_checks``);
- open vowels open the jaw more than bilabials;
- silence: 200 ms into every pause of >= 400 ms (each prompt is followed by 0.6 s of silence, as a
  live stream is) the mouth is back near neutral (sum of mouth weights <= 0.1), in >= 90 % of pauses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES

THRESHOLDS = {"jaw_corr": 0.75, "bilabial_closure_rate": 0.85, "silence_neutral_rate": 0.90}
MOUTH = [ARKIT_INDEX[n] for n in ARKIT_NAMES if n.startswith(("jaw", "mouth"))]


@dataclass
class HeldOutClip:
    name: str
    text: str
    audio: np.ndarray
    targets: np.ndarray       # (T, 52) at 25 fps
    phones: list[str]
    starts: np.ndarray
    ends: np.ndarray


def heldout_clips(max_prompts: int = 0, seed: int = 0, progress: bool = True) -> list[HeldOutClip]:
    """The held-out Asterisk prompts, aligned, with procedural targets (same recipe as the corpus)."""
    from tqdm import tqdm

    from lsf_core.data import sources
    from lsf_core.data.align import Aligner, AlignmentError
    from lsf_core.data.dataset import DataConfig, make_targets

    sources.ensure_asterisk()
    cfg = DataConfig(seed=seed)
    _, test = sources.split_prompts(sources.asterisk_prompts(), cfg.seed, cfg.asterisk_train_fraction)
    if max_prompts:
        test = test[:: max(1, len(test) // max_prompts)][:max_prompts]
    aligner, clips = Aligner(), []
    for i, p in enumerate(tqdm(test, desc="held-out prompts", unit="prompt", disable=not progress)):
        # a live stream has silence around speech; the prompts are trimmed: add 0.3 s before, 0.6 s after
        speech = sources.decode_g722(Path(p.path))
        audio = np.concatenate([np.zeros(4800, np.float32), speech, np.zeros(9600, np.float32)])
        try:
            al = aligner.align(audio, p.text)
        except AlignmentError:
            continue
        targets = make_targets(audio, al.phones, al.starts, al.ends, np.random.default_rng([seed, i]))
        clips.append(HeldOutClip(p.name, p.text, audio, targets, list(al.phones), np.asarray(al.starts),
                                 np.asarray(al.ends)))
    return clips


def _silence_checks(times, weights, phones, starts, ends, after: float = 0.2, min_pause: float = 0.4):
    """For each pause (SIL of >= min_pause, or the end of speech): mouth weight sum ``after`` s in."""
    mouth = weights[:, MOUTH].sum(1)
    results = []
    for ph, s, e in zip(phones, starts, ends):
        if ph.upper() in ("SIL", "SP", "") and e - s >= min_pause and s > 0.05:
            t = s + after
            if t <= times[-1]:
                results.append(float(np.interp(t, times, mouth)))
    return results


def evaluate(animator, clips: list[HeldOutClip]) -> dict:
    from lsf_core.evaluation.metrics import Phone, lip_sync_checks

    pred_jaw, true_jaw, silence = [], [], []
    all_times, all_pred, all_phones, offset = [], [], [], 0.0
    for clip in clips:
        frames = animator.animate(clip.audio, 16000)
        times = np.array([f.stamp for f in frames])
        pred = np.stack([f.blendshapes for f in frames])
        t_target = np.arange(len(clip.targets)) / 25.0
        pred_jaw.append(np.interp(t_target, times, pred[:, ARKIT_INDEX["jawOpen"]]))
        true_jaw.append(clip.targets[:, ARKIT_INDEX["jawOpen"]])
        silence += _silence_checks(times, pred, clip.phones, clip.starts, clip.ends)
        all_times.append(times + offset)
        all_pred.append(pred)
        all_phones += [Phone(float(s) + offset, float(e) + offset, ph)
                       for ph, s, e in zip(clip.phones, clip.starts, clip.ends)]
        offset += clip.audio.size / 16000 + 1.0
    pj, tj = np.concatenate(pred_jaw), np.concatenate(true_jaw)
    lips = lip_sync_checks(np.concatenate(all_times), np.concatenate(all_pred), list(ARKIT_NAMES), all_phones)
    silence_arr = np.array(silence)
    result = {
        "prompts": len(clips),
        "seconds": round(sum(c.audio.size for c in clips) / 16000, 1),
        "jaw_corr": float(np.corrcoef(pj, tj)[0, 1]),
        "bilabial_closure_rate": lips.get("bilabial_closure_rate"),
        "bilabials": lips.get("bilabials"),
        "jaw_open_vowels": lips.get("jaw_open_vowels"),
        "jaw_bilabials": lips.get("jaw_bilabials"),
        "open_vowel_jaw_gt_bilabial": lips.get("open_vowel_jaw_gt_bilabial"),
        "pauses": int(silence_arr.size),
        "silence_neutral_rate": float(np.mean(silence_arr <= 0.1)) if silence_arr.size else None,
        "silence_mouth_sum_p90": float(np.percentile(silence_arr, 90)) if silence_arr.size else None,
    }
    result["passed"] = bool(
        result["jaw_corr"] >= THRESHOLDS["jaw_corr"]
        and (result["bilabial_closure_rate"] or 0) >= THRESHOLDS["bilabial_closure_rate"]
        and result["open_vowel_jaw_gt_bilabial"]
        and (result["silence_neutral_rate"] or 0) >= THRESHOLDS["silence_neutral_rate"])
    return result
