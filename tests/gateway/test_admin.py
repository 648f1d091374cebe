"""The admin listener over real sockets: health, readiness, Prometheus metrics."""

from __future__ import annotations

import httpx
import msgspec

from gateway.metrics import Exposition, Histogram
from tests.gateway.conftest import GatewayFactory


async def test_metrics_need_credentials_by_default(start_gateway: GatewayFactory) -> None:
    async with start_gateway(admin_listen="127.0.0.1:0") as gw, httpx.AsyncClient(timeout=10) as http:
        assert gw.admin_address is not None
        admin = f"http://127.0.0.1:{gw.admin_address[1]}"
        metrics = await http.get(f"{admin}/metrics")
        health = await http.get(f"{admin}/healthz")
    assert metrics.status_code == 401
    assert metrics.json()["error"] == "unauthorized"
    assert health.status_code == 200


async def test_health_ready_and_metrics(start_gateway: GatewayFactory) -> None:
    public = {"admin_listen": "127.0.0.1:0", "public_metrics": True}
    async with start_gateway(**public) as gw, httpx.AsyncClient(timeout=10) as http:
        assert gw.admin_address is not None
        admin = f"http://127.0.0.1:{gw.admin_address[1]}"
        for _ in range(3):
            await http.get(f"http://127.0.0.1:{gw.port}/v1/models")
        await http.get(f"http://127.0.0.1:{gw.port}/v1/models", headers={"X-Wardgate-Session": "not valid!"})
        health = await http.get(f"{admin}/healthz")
        ready = await http.get(f"{admin}/readyz")
        metrics = await http.get(f"{admin}/metrics")
        missing = await http.get(f"{admin}/nope")
        post = await http.post(f"{admin}/healthz")
    assert health.status_code == 200
    assert ready.status_code == 200
    assert msgspec.json.decode(ready.content) == {"ready": True, "reasons": []}
    assert (missing.status_code, post.status_code) == (404, 405)
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "wardgate_exchanges_total 4" in text
    assert 'wardgate_exchanges_ended_total{outcome="complete"} 3' in text
    assert 'wardgate_errors_total{kind="bad_request"} 1' in text
    assert "wardgate_log_healthy 1" in text
    assert "# TYPE wardgate_log_fsync_seconds histogram" in text
    assert 'wardgate_log_fsync_seconds_bucket{le="+Inf"}' in text


async def test_readyz_reports_a_broken_log(start_gateway: GatewayFactory) -> None:
    async with start_gateway(admin_listen="127.0.0.1:0") as gw, httpx.AsyncClient(timeout=10) as http:
        assert gw.recorder is not None
        assert gw.admin_address is not None
        gw.recorder.failure = OSError(28, "No space left on device")
        ready = await http.get(f"http://127.0.0.1:{gw.admin_address[1]}/readyz")
        refused = await http.get(f"http://127.0.0.1:{gw.port}/v1/models")
        gw.recorder.failure = None
    assert ready.status_code == 503
    assert "No space left" in ready.json()["reasons"][0]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "recording_unavailable"


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 5.0):
        histogram.observe(value)
    exposition = Exposition()
    exposition.histogram("x_seconds", "help", histogram)
    lines = exposition.text().splitlines()
    assert 'x_seconds_bucket{le="0.1"} 1' in lines
    assert 'x_seconds_bucket{le="1.0"} 3' in lines
    assert 'x_seconds_bucket{le="+Inf"} 4' in lines
    assert "x_seconds_count 4" in lines


def test_worker_scrapes_merge_into_one_exposition() -> None:
    def scrape(exchanges: int, healthy: int, errors: dict[str, int], fsync_s: float) -> str:
        out = Exposition()
        out.metric("wardgate_exchanges_total", "counter", "Requests received", exchanges)
        out.metric("wardgate_errors_total", "counter", "Errors, by kind")
        out.labelled("wardgate_errors_total", "kind", errors)
        out.metric("wardgate_log_healthy", "gauge", "1 while writable", healthy)
        histogram = Histogram((0.1,))
        histogram.observe(fsync_s)
        out.histogram("wardgate_log_fsync_seconds", "fsync", histogram)
        return out.text()

    merged = Exposition()
    merged.merged(
        [scrape(3, 1, {"bad_request": 1}, 0.05), scrape(4, 0, {"timeout": 2}, 0.5)],
        minimum=frozenset({"wardgate_log_healthy"}),
    )
    lines = merged.text().splitlines()
    assert lines.count("# TYPE wardgate_exchanges_total counter") == 1
    assert "wardgate_exchanges_total 7" in lines
    assert "wardgate_log_healthy 0" in lines  # the least healthy worker
    # A label only one worker has stays inside its family's group.
    errors = lines.index("# TYPE wardgate_errors_total counter")
    assert lines[errors + 1 : errors + 3] == [
        'wardgate_errors_total{kind="bad_request"} 1',
        'wardgate_errors_total{kind="timeout"} 2',
    ]
    assert 'wardgate_log_fsync_seconds_bucket{le="0.1"} 1' in lines
    assert 'wardgate_log_fsync_seconds_bucket{le="+Inf"} 2' in lines
    assert "wardgate_log_fsync_seconds_count 2" in lines
