"""The one retry policy of the HTTP transfer: its waits, its per-kind limits, and a download
that follows it against a real local server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from httpserver import Behaviour, Server

from danbert_convert.errors import DownloadError
from danbert_convert.releases import http
from danbert_convert.releases.http import DEFAULT_RETRY, RetryPolicy, download


def test_delay_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_per_kind_limits_never_exceed_retries() -> None:
    policy = RetryPolicy(retries=4, dns_retries=2, tls_retries=1)
    assert [policy.limit(k) for k in (None, "dns", "tls", "certificate")] == [4, 2, 1, 0]
    none = dataclasses.replace(policy, retries=0)
    assert [none.limit(k) for k in (None, "dns", "tls", "certificate")] == [0, 0, 0, 0]


def test_the_default_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RETRY.retries = 0  # type: ignore[misc]


@pytest.mark.usefixtures("local_network")
def test_download_follows_the_policy_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(http.time, "sleep", sleeps.append)
    policy = RetryPolicy(retries=3, backoff=0.25, max_backoff=0.5, timeout=(2.0, 2.0))
    with Server() as server:
        url = server.route("/r.zip", Behaviour(status=503, body=b"busy"))
        with pytest.raises(DownloadError, match=r"HTTP 503 .*\(gave up after 3 retries\)"):
            download([url], tmp_path / "r.zip", progress=False, retry=policy)
        assert len(server.requests_to("/r.zip")) == 4
    assert sleeps == [0.25, 0.5, 0.5]
