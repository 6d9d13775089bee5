"""Benchmark metrics on hand-made request timelines, checked against hand calculations."""

import pytest

from thrifty.benchmark import metrics
from thrifty.benchmark.metrics import RequestRecord
from thrifty.core import stats
from thrifty.core.errors import BadInput


def timeline() -> list[RequestRecord]:
    """Two successes and one failure:
    r1 sent at 0.00 s: first chunk after 100 ms, then gaps of 20/30/50 ms, done at 200 ms, 4 tokens
    r2 sent at 0.05 s: first chunk after 300 ms, one gap of 100 ms, done at 500 ms, 2 tokens
    r3 sent at 0.10 s: HTTP 500 after 10 ms
    """
    return [
        RequestRecord(0, "m", "base", 0.00, ok=True, input_tokens=10, output_tokens=4,
                      ttft_s=0.1, e2e_s=0.2, itl_s=[0.02, 0.03, 0.05]),
        RequestRecord(0, "a", "a", 0.05, ok=True, input_tokens=20, output_tokens=2,
                      ttft_s=0.3, e2e_s=0.5, itl_s=[0.1]),
        RequestRecord(0, "m", "base", 0.10, ok=False, error="HTTP 500: boom", e2e_s=0.01),
    ]


def test_tpot_follows_vllm_definition():
    r1, r2, r3 = timeline()
    assert r1.tpot_s == pytest.approx((0.2 - 0.1) / 3)
    assert r2.tpot_s == pytest.approx(0.2)
    assert r3.tpot_s is None
    one_token = RequestRecord(0, "m", "base", 0, ok=True, output_tokens=1, ttft_s=0.1, e2e_s=0.1)
    assert one_token.tpot_s is None


def test_aggregate_on_a_hand_made_timeline():
    s = metrics.aggregate(timeline())
    # first send at 0.00, last finish at 0.05 + 0.5 = 0.55 (the failure ends at 0.11)
    assert s["duration_s"] == pytest.approx(0.55)
    assert (s["requests_count"], s["completed_count"], s["errors_count"]) == (3, 2, 1)
    assert s["request_throughput_per_s"] == pytest.approx(2 / 0.55, rel=1e-3)
    assert s["output_throughput_tokens_per_s"] == pytest.approx(6 / 0.55, rel=1e-3)
    assert s["total_throughput_tokens_per_s"] == pytest.approx(36 / 0.55, rel=1e-3)
    # TTFT [100, 300] ms: linear interpolation as numpy does
    assert s["ttft_ms_p50"] == pytest.approx(200)
    assert s["ttft_ms_p90"] == pytest.approx(280)
    assert s["ttft_ms_p99"] == pytest.approx(298)
    assert s["ttft_ms_mean"] == pytest.approx(200)
    # ITL pools every gap of every request: [20, 30, 50, 100] ms
    assert s["itl_ms_p50"] == pytest.approx(40)
    assert s["itl_ms_mean"] == pytest.approx(50)
    # TPOT per request [33.33, 200] ms
    assert s["tpot_ms_p50"] == pytest.approx((100 / 3 + 200) / 2, rel=1e-4)
    assert s["e2e_ms_p50"] == pytest.approx(350)
    assert "goodput_requests_per_s" not in s


def test_goodput_counts_only_successes_within_every_limit():
    s = metrics.aggregate(timeline(), slo={"ttft_ms": 200, "tpot_ms": 50})
    # r1 meets both, r2 misses TTFT (300 ms) and TPOT (200 ms), r3 failed
    assert s["slo_attainment_pct"] == pytest.approx(33.33)
    assert s["goodput_requests_per_s"] == pytest.approx(1 / 0.55, rel=1e-3)
    loose = metrics.aggregate(timeline(), slo={"ttft_ms": 1000})
    assert loose["slo_attainment_pct"] == pytest.approx(66.67)
    strict_itl = metrics.aggregate(timeline(), slo={"itl_ms": 40})  # r1's worst gap is 50 ms
    assert strict_itl["slo_attainment_pct"] == 0


def test_point_meets_slo_uses_the_attainment_share():
    summary = metrics.aggregate(timeline(), slo={"ttft_ms": 1000})
    assert metrics.point_meets_slo(summary, 60)
    assert not metrics.point_meets_slo(summary, 90)


def test_shared_span_for_per_adapter_throughput():
    records = timeline()
    base = [r for r in records if r.adapter == "base"]
    alone = metrics.aggregate(base)
    shared = metrics.aggregate(base, span_s=0.55)
    assert alone["duration_s"] == pytest.approx(0.2)  # r1 0.0-0.2, r3 0.1-0.11
    assert shared["output_throughput_tokens_per_s"] == pytest.approx(4 / 0.55, rel=1e-3)


def test_errors_are_counted_by_message():
    assert metrics.error_kinds(timeline()) == {"HTTP 500: boom": 1}


def test_all_failed_gives_no_latency_but_counts():
    failed = [RequestRecord(0, "m", "base", 0.0, ok=False, error="x", e2e_s=0.1)]
    s = metrics.aggregate(failed, slo={"ttft_ms": 100})
    assert s["errors_count"] == 1 and s["ttft_ms_p50"] is None
    assert s["slo_attainment_pct"] == 0


def test_empty_point():
    s = metrics.aggregate([])
    assert s["requests_count"] == 0 and s["request_throughput_per_s"] is None


@pytest.mark.parametrize("pct, expected", [(0, 1), (50, 2.5), (100, 4), (25, 1.75)])
def test_percentile_interpolates(pct, expected):
    assert stats.percentile([4, 1, 3, 2], pct) == pytest.approx(expected)


def test_parse_slo():
    assert stats.parse_slo("ttft_ms=500, tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}


@pytest.mark.parametrize("text, says", [
    ("ttft=500", "unknown limit 'ttft'"),
    ("ttft_ms:500", "is not KEY=MILLISECONDS"),
    ("ttft_ms=0", "positive"),
    ("ttft_ms=5,ttft_ms=6", "given twice"),
    ("", "is not KEY=MILLISECONDS"),
])
def test_parse_slo_rejects(text, says):
    with pytest.raises(BadInput, match=says):
        stats.parse_slo(text)
