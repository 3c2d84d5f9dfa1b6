"""bench/peer_llamacpp.py's arithmetic and table (the llama.cpp run itself is a benchmark: CI does not
build llama.cpp)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_llamacpp", REPO_ROOT / "bench" / "peer_llamacpp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(items_per_s: float, valid: float = 1.0, p95: float = 5.0) -> dict[str, float]:
    return {
        "items_per_s": items_per_s,
        "tokens_per_s": items_per_s * 130,
        "p95_s": p95,
        "schema_valid_rate": valid,
        "peak_rss_mb": 600.0,
    }


def test_peer_ratio_is_ours_over_llamacpp_q8_averaged_over_rounds() -> None:
    peer = _peer()
    rounds = [
        {peer.OURS_CONFIG: _run(1.5), peer.PEER_Q8: _run(1.0, valid=0.9, p95=9.0)},
        {peer.OURS_CONFIG: _run(1.7), peer.PEER_Q8: _run(0.6, p95=12.0)},
    ]
    summary = peer.summarise(rounds)
    assert summary["peer_ratio"] == pytest.approx(1.6 / 0.8)
    q8 = summary["engines"][peer.PEER_Q8]
    assert q8["items_per_s_runs"] == [1.0, 0.6]
    assert q8["schema_valid_rate"] == 0.9 and q8["p95_s"] == 12.0  # the worst round, not the mean
    table = peer.format_table(summary)
    assert "| llama.cpp-Q8_0 | 0.800 (1.000 / 0.600) |" in table and "| 90% | 1.00 |" in table
    assert f"| {peer.OURS_CONFIG} | 1.600 (1.500 / 1.700) |" in table and "| 2.00 |" in table


def test_default_sources_are_the_fast_presets_base(tmp_path: Path) -> None:
    from worker.presets import BASE_MODEL

    gguf, model = _peer().default_sources(tmp_path)
    assert model == tmp_path / "models" / BASE_MODEL.version_id
    assert gguf == model / BASE_MODEL.gguf
