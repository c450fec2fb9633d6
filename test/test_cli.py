"""The ``lsf`` command line end to end, in its own process: exit codes, files written, errors in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lsf_core.evaluation.resources import load_or_build
from lsf_core.models.registry import ModelFileError


def lsf(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsf_core.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_corrupt_model_file_is_an_error_naming_it_never_random_weights(tmp_path):
    """Kills: load_or_build falling back to fresh weights for a file that exists but cannot be read."""
    bad = tmp_path / "realtime.safetensors"   # named like a preset: the old fallback built a fresh realtime
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelFileError, match="realtime.safetensors"):
        load_or_build(str(bad))
    with pytest.raises(ModelFileError, match="missing.safetensors"):
        load_or_build(str(tmp_path / "missing.safetensors"))
    r = lsf("bench", "--stream", "--preset", str(bad), "--seconds", "1")
    assert r.returncode == 1, r
    assert str(bad) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert load_or_build("paper")[1] == "random weights"   # a preset that ships no weights: fresh ones, said so


def test_lsf_bench_stream_writes_its_measures(model_path, tmp_path):
    """``lsf bench --stream`` (the node's code path) with a soak: every reported measure is present and sane."""
    out = tmp_path / "bench.json"
    r = lsf("bench", "--stream", "--preset", str(model_path), "--seconds", "3", "--max-streams", "2",
            "--soak", "4", "--device", "cpu", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    st = res["stream"]
    assert st["weights"] == "model file" and st["audio_seconds"] == 3.0 and st["device"] == "cpu"
    assert 0 < st["rtf"] < 5 and 0 < st["hop_compute_ms_p50"] <= st["hop_compute_ms_p95"]
    # vertex offsets are made on first use: their cost is reported apart, on top of the engine's
    assert st["vertices"] > 1000 and st["vertex_offsets_ms_per_frame_p50"] > 0
    assert st["rtf_with_vertex_offsets"] > st["rtf"]
    assert st["algorithmic_latency_ms"] == pytest.approx(120.0, abs=40.0)
    streams = st["concurrent_streams"]
    assert set(streams["hop_p95_ms_by_streams"]) <= {"1", "2", "3"} and 0 <= streams["max_realtime_streams"] <= 2
    soak = res["soak"]
    assert soak["audio_seconds"] == 4.0 and abs(soak["frames"] - soak["expected_frames"]) <= 1, soak
    assert res["machine"]["threads"] >= 1


def test_unknown_command_and_bad_arguments_exit_2():
    assert lsf("nonsense").returncode == 2
    r = lsf("bench", "--seconds", "many")
    assert r.returncode == 2 and "invalid float value" in r.stderr
    assert lsf("--help").returncode == 0


def test_lsf_data_make_rejects_a_bad_recipe_in_one_line(tmp_path):
    """A recipe with an unknown key: exit 1 naming the file and the key, nothing made."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 3\nsynthetic_hourz: 0.1\n")
    r = lsf("data", "make", "-o", str(tmp_path / "out"), "--config", str(recipe))
    assert r.returncode == 1 and "synthetic_hourz" in r.stderr and str(recipe) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_lsf_evaluate_exit_code_says_whether_the_model_passes(model_path, tmp_path):
    """``lsf evaluate`` writes its JSON and exits 1 when a threshold is missed (an untrained model misses them)."""
    out = tmp_path / "eval.json"
    r = lsf("evaluate", "--model", str(model_path), "--max-prompts", "4", "--json", str(out))
    res = json.loads(out.read_text())
    assert r.returncode == 1 and res["passed"] is False, r.stderr[-2000:]
    assert res["prompts"] == 4 and -1.0 <= res["jaw_corr"] <= 1.0
