"""lsf_core.evaluation.metrics on arrays whose answers are known by construction."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lsf_core.evaluation import metrics as M


@pytest.fixture()
def motion(rng):
    """Ground truth: 20 frames, 12 vertices, a template and per-frame motion."""
    template = rng.normal(size=(12, 3))
    gt = template[None] + 0.01 * rng.normal(size=(20, 12, 3))
    return template, gt


def test_mve_is_mean_l2_distance(motion):
    _, gt = motion
    pred = gt + np.array([0.003, 0.004, 0.0])       # every vertex 5 mm off
    assert M.mve(pred, gt) == pytest.approx(0.005)
    assert M.mve(gt, gt) == 0.0


def test_lve_takes_max_squared_error_over_lip_vertices(motion):
    _, gt = motion
    pred = gt.copy()
    pred[:10, 3] += [0.0, 0.0, 0.002]                # lip vertex 3 off by 2 mm in half the frames
    pred[:, 7] += [0.0, 0.01, 0.0]                   # a non-lip vertex far off: must not count
    assert M.lve(pred, gt, [2, 3, 4]) == pytest.approx(0.5 * 0.002 ** 2)
    assert M.lve(pred, gt, [7]) == pytest.approx(0.01 ** 2)


def test_fdd_compares_upper_face_motion_variability(motion):
    template, gt = motion
    still = np.repeat(template[None], gt.shape[0], axis=0)
    upper = [0, 1, 5]
    assert M.fdd(gt, gt, template, upper) == 0.0
    expected = M.motion_std(gt, template, upper)
    assert expected > 0
    assert M.fdd(still, gt, template, upper) == pytest.approx(expected)
    # by hand for one vertex: std over time of the squared displacement
    disp = np.sum((gt[:, 0] - template[0]) ** 2, axis=1)
    assert M.motion_std(gt, template, [0]) == pytest.approx(disp.std())


def test_sample_metrics_mee_ce_diversity(motion):
    _, gt = motion
    d = np.zeros(3)
    d[0] = 0.002
    samples = np.stack([gt + d, gt - d, gt + 2 * d, gt])   # mean = gt + d/2; best sample = gt
    assert M.ce(samples, gt, [0, 1]) == 0.0
    assert M.mee(samples, gt, [0, 1]) == pytest.approx((0.001) ** 2)
    # halves: (gt+d, gt-d) vs (gt+2d, gt): pair distances |d| and |d|
    assert M.diversity(samples) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="at least 2"):
        M.diversity(samples[:1])


def test_bad_shapes_and_regions_are_named(motion):
    _, gt = motion
    with pytest.raises(ValueError, match="same topology"):
        M.mve(gt[:, :5], gt)
    with pytest.raises(ValueError, match="lip region indexes"):
        M.lve(gt, gt, [3, 40])
    with pytest.raises(ValueError, match=r"\(T, V, 3\)"):
        M.mve(gt[0], gt)
    out = M.vertex_metrics(gt, gt)
    assert out["mve"] == 0.0 and "lve_skipped" in out and "fdd_skipped" in out


def test_blendshape_error_matches_names_across_spellings():
    pred = np.array([[0.5, 0.2], [0.7, 0.4]])
    gt = np.array([[0.2, 0.5, 0.9], [0.4, 0.5, 0.9]])
    out = M.blendshape_error(pred, ["jawOpen", "mouthSmile_L"], gt, ["mouthSmileLeft", "jawOpen", "cheekPuff"])
    assert out["names"] == 2
    assert out["mae"] == pytest.approx(np.mean([0.0, 0.2, 0.0, 0.0]))
    assert out["worst"]["jawOpen"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="share no names"):
        M.blendshape_error(pred, ["jawOpen", "x"], gt, ["a", "b", "c"])


def _phones() -> list[M.Phone]:
    # "ma pa ba" at 0.2 s per phone
    labels = ["M", "AA1", "P", "AE1", "B", "AA0"]
    return [M.Phone(0.2 * i, 0.2 * (i + 1), lab) for i, lab in enumerate(labels)]


def test_lip_sync_checks_pass_for_a_well_synced_track_and_fail_for_an_inverted_one():
    phones = _phones()
    times = np.arange(0, 1.2, 1 / 30)
    names = ["jawOpen", "mouthClose", "mouthFunnel"]
    vowel = np.zeros_like(times, dtype=bool)
    for p in phones:
        if M.phone_key(p.label) in M.OPEN_VOWELS:
            vowel |= (times >= p.start) & (times < p.end)
    good = np.stack([np.where(vowel, 0.6, 0.05), np.zeros_like(times), np.zeros_like(times)], axis=1)
    out = M.lip_sync_checks(times, good, names, phones)
    assert out["bilabials"] == 3 and out["open_vowels"] == 3
    assert out["bilabial_closure_rate"] == 1.0 and out["open_vowel_jaw_gt_bilabial"] is True
    bad = good.copy()
    bad[:, 0] = np.where(vowel, 0.05, 0.6)
    out = M.lip_sync_checks(times, bad, names, phones)
    assert out["bilabial_closure_rate"] == 0.0 and out["open_vowel_jaw_gt_bilabial"] is False
    # mouthClose over an open jaw closes the lips
    closed = bad.copy()
    closed[:, 1] = np.where(vowel, 0.0, 0.58)
    assert M.lip_sync_checks(times, closed, names, phones)["bilabial_closure_rate"] == 1.0
    assert "skipped" in M.lip_sync_checks(times, good, names, phones[:1])
    shut = np.zeros_like(good)          # the mouth never opens: no reference for "closed"
    assert M.lip_sync_checks(times, shut, names, phones)["bilabial_closure_rate"] is None


def test_load_phones_text_and_json(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("# start end phone\n0.00\t0.10\tsil\n0.10 0.25 M\n")
    assert M.load_phones(txt) == [M.Phone(0.0, 0.1, "sil"), M.Phone(0.1, 0.25, "M")]
    js = tmp_path / "a.json"
    js.write_text(json.dumps([{"start": 0, "end": 0.1, "phone": "p"}, [0.1, 0.2, "a"]]))
    assert [p.label for p in M.load_phones(js)] == ["p", "a"]
    bad = tmp_path / "b.txt"
    bad.write_text("0.1 0.2\n")
    with pytest.raises(ValueError, match=r"b.txt:1: expected"):
        M.load_phones(bad)
    bad.write_text("0.3 0.2 m\n")
    with pytest.raises(ValueError, match="ends"):
        M.load_phones(bad)


def test_latency_stats_in_milliseconds():
    lat = np.linspace(0.1, 0.2, 101)
    out = M.latency_stats(lat)
    assert out["count"] == 101
    assert out["p50_ms"] == pytest.approx(150.0)
    assert out["min_ms"] == pytest.approx(100.0) and out["max_ms"] == pytest.approx(200.0)
    assert M.latency_stats(np.zeros(0)) == {"count": 0}


def test_frame_counts_find_drops_and_duplicates():
    rate = 30.0
    stamps = 10.0 + np.arange(60) / rate              # 2 s of frames
    stamps = np.delete(stamps, [10, 11, 40])          # three dropped
    stamps = np.insert(stamps, 20, stamps[20])        # one duplicated
    out = M.frame_counts(stamps, rate, 10.0, 12.0)
    assert out["expected"] == 60 and out["frames"] == 58
    assert out["dropped"] == 3 and out["duplicated"] == 1
    # frames missing at the ends of the interval count as dropped too
    out = M.frame_counts(10.0 + np.arange(5, 55) / rate, rate, 10.0, 12.0)
    assert out["dropped"] == 10 and out["duplicated"] == 0


def test_best_lag_recovers_a_delay():
    t_ref = np.arange(0, 2, 0.01)
    ref = np.stack([np.sin(2 * np.pi * 1.3 * t_ref), np.cos(2 * np.pi * 0.7 * t_ref)], axis=1)
    t = np.arange(0.2, 1.8, 1 / 30)
    late = np.stack([np.sin(2 * np.pi * 1.3 * (t - 0.06)), np.cos(2 * np.pi * 0.7 * (t - 0.06))], axis=1)
    assert M.best_lag(t, late, t_ref, ref) == pytest.approx(0.06, abs=0.006)
