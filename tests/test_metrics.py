"""StreamMetrics: names follow ostinato_<area>_<thing>_<unit>, registries are independent."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from ostinato.stream.metrics import StreamMetrics, process_rss_bytes

_UNITS = ("seconds", "bytes", "items", "windows", "ratio")


def test_every_metric_is_named_by_convention() -> None:
    m = StreamMetrics()
    metrics = list(m.registry.collect())
    assert len(metrics) >= 20
    for metric in metrics:
        parts = metric.name.split("_")
        assert parts[0] == "ostinato" and len(parts) >= 3, metric.name
        if metric.type == "histogram":
            assert parts[-1] in _UNITS, metric.name
        for sample in metric.samples:
            if metric.type == "counter" and sample.name.endswith("_created"):
                continue
            if metric.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            assert re.fullmatch(r"[a-z_]+", sample.name), sample.name


def test_registries_are_independent_and_readable() -> None:
    a, b = StreamMetrics(), StreamMetrics()
    a.frames_out.inc(5)
    assert a.value("ostinato_pipeline_frames_total") == 5
    assert b.value("ostinato_pipeline_frames_total") == 0
    assert a.value("ostinato_process_resident_memory_bytes") > 10e6
    assert b"ostinato_pipeline_frames_total 5.0" in generate_latest(a.registry)


def test_rss_is_plausible() -> None:
    rss = process_rss_bytes()
    assert 10e6 < rss < 64e9
