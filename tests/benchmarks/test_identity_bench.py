"""The identity benchmark runs and reports every path; no timing is asserted (it depends on the machine)."""

from __future__ import annotations

from benchmarks.identity import measure


async def test_identity_benchmark_reports_every_path() -> None:
    figures = await measure(20)
    assert [f.name for f in figures] == [
        "oidc RS256 full verify",
        "oidc RS256 cached",
        "oidc ES256 full verify",
        "oidc ES256 cached",
        "api key (20 configured)",
        "access: key + policy + credential",
    ]
    assert all(f.n in (19, 20) and f.us_per_op > 0 for f in figures)
