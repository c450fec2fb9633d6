"""Offline benchmark on a reduced paper config (random weights): latency per clip length, memory, sizes."""
from __future__ import annotations

import json

import pytest
import torch

from lsf_core.cli.main import main
from lsf_core.evaluation.bench_offline import bench_offline, parameter_counts
from lsf_core.models.lsf_paper import SMALL_OVERRIDES
from lsf_core.models.registry import build_model, save_model


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return build_model("paper", SMALL_OVERRIDES)


def test_bench_offline_reports_latency_memory_and_sizes(paper):
    torch.set_num_threads(1)
    r = bench_offline(paper, "cpu", seconds=(1.0, 3.0), runs=2)
    assert set(r["latency"]) == {"1s", "3s"}
    for sec, row in (("1s", 1.0), ("3s", 3.0)):
        lat = r["latency"][sec]
        assert 0 < lat["min_ms"] <= lat["median_ms"] and lat["rtf"] == pytest.approx(lat["median_ms"] / 1000 / row)
    assert r["memory"]["peak_rss_mb"] > 50
    counts = r["parameters"]
    assert counts["total"] == sum(p.numel() for p in paper.parameters())
    parts = ("content_encoder", "emotion_encoder", "identity", "predictor", "prior")
    assert sum(counts[k] for k in parts) == counts["total"]
    assert counts["trainable"] < counts["total"]  # the emotion encoder and HuBERT front end are frozen
    with pytest.raises(ValueError, match="runs must be >= 1"):
        bench_offline(paper, "cpu", runs=0)


def test_lsf_bench_writes_json(paper, tmp_path):
    torch.set_num_threads(1)
    model_file = save_model(paper, tmp_path / "small.safetensors")
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"stream": {"rtf": 11.8}, "offline": {"stale": True}}))  # an earlier --stream run
    assert main(["bench", "--preset", str(model_file), "--device", "cpu", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["stream"] == {"rtf": 11.8}  # the other mode's section is kept, ours replaced
    r = written["offline"]
    assert "stale" not in r
    assert set(r["latency"]) == {"1s", "4s", "10s"}
    assert r["parameters"] == parameter_counts(paper)
    assert "random" in r["note"]
