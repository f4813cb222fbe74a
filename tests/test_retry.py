"""Backoff, jitter, Retry-After and the per-cycle budget; the retrying transport on httpx.MockTransport."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import httpx
import pytest

from digest.retry import Retrier, RetryPolicy, retry_after_seconds
from digest.sources import make_client
from digest.sources.http import MIN_RETRY_DELAY, RetryingTransport, StoppedError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Waits:
    """Records the waits a Retrier asks for instead of sleeping; True from ``interrupt_at`` on."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.seen: list[float] = []
        self.interrupt_at = interrupt_at

    def __call__(self, seconds: float) -> bool:
        self.seen.append(seconds)
        return self.interrupt_at is not None and len(self.seen) >= self.interrupt_at


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, initial_delay=1.0, max_delay=8.0)
    assert [policy.backoff(n, 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.backoff(n, 0.999) for n in range(1, 6)] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0], abs=0.01)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 11:00:00 GMT", 0.0),  # a date in the past: go now
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_attempts_and_budget_bound_the_waiting() -> None:
    waits = Waits()
    retrier = Retrier(RetryPolicy(attempts=3, initial_delay=1, max_delay=4, budget=10), wait=waits, unit=lambda: 0.0)
    assert retrier.pause(1, "x") and retrier.pause(2, "x")
    assert not retrier.pause(3, "x")  # three attempts: two retries
    assert waits.seen == [0.5, 1.0]
    # The budget is shared: a Retry-After longer than what is left is not waited for.
    assert retrier.pause(1, "y", hint=8.0)
    assert not retrier.pause(1, "z", hint=1.0)
    assert waits.seen == [0.5, 1.0, 8.0]


def test_a_stop_ends_the_wait_and_the_retries() -> None:
    stop = threading.Event()
    retrier = Retrier(RetryPolicy(attempts=5), stop=stop, wait=Waits(interrupt_at=1))
    assert not retrier.pause(1, "x")  # interrupted while waiting
    stop.set()
    waits = Waits()
    assert not Retrier(RetryPolicy(attempts=5), stop=stop, wait=waits).pause(1, "x")
    assert waits.seen == []


def scripted(answers: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def test_transport_retries_503_and_429_honouring_retry_after() -> None:
    inner, seen = scripted(
        [
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json=[]),
        ]
    )
    waits = Waits()
    retrier = Retrier(RetryPolicy(attempts=5, initial_delay=0.1, budget=60), wait=waits, unit=lambda: 0.0)
    with make_client(transport=inner, retrier=retrier) as client:
        response = client.get("http://api.test/x")
    assert response.status_code == 200
    assert len(seen) == 4
    assert waits.seen == [0.05, 0.1, 3.0]  # backoff, backoff, then the server's 3 s


def test_transport_gives_up_with_the_last_answer_and_never_retries_a_post() -> None:
    inner, seen = scripted([httpx.Response(503)] * 3 + [httpx.Response(500)])
    retrier = Retrier(RetryPolicy(attempts=3, initial_delay=0.1), wait=Waits())
    with httpx.Client(transport=RetryingTransport(retrier, inner)) as client:
        assert client.get("http://api.test/x").status_code == 503
        assert len(seen) == 3
        assert client.post("http://api.test/x").status_code == 500
        assert len(seen) == 4


def test_transport_does_not_retry_a_404() -> None:
    inner, seen = scripted([httpx.Response(404)])
    with make_client(transport=inner, retrier=Retrier(RetryPolicy(), wait=Waits())) as client:
        assert client.get("http://api.test/x").status_code == 404
    assert len(seen) == 1


def test_transport_makes_no_new_request_once_stopping() -> None:
    inner, seen = scripted([httpx.Response(200, json=[])])
    stop = threading.Event()
    stop.set()
    with make_client(transport=inner, retrier=Retrier(RetryPolicy(), stop=stop)) as client, pytest.raises(StoppedError):
        client.get("http://api.test/x")
    assert seen == []


def test_a_request_can_ask_for_a_minimum_wait_between_its_retries() -> None:
    """arXiv's 3 s spacing holds for retries too: the backoff is raised to the request's floor."""
    inner, seen = scripted(
        [httpx.Response(503), httpx.Response(503, headers={"Retry-After": "5"}), httpx.Response(200)]
    )
    waits = Waits()
    retrier = Retrier(RetryPolicy(attempts=5, initial_delay=0.1, budget=60), wait=waits, unit=lambda: 0.0)
    with make_client(transport=inner, retrier=retrier) as client:
        response = client.get("http://api.test/x", extensions={MIN_RETRY_DELAY: 3.0})
    assert response.status_code == 200
    assert len(seen) == 3
    assert waits.seen == [3.0, 5.0]  # the floor, then the server's longer Retry-After
