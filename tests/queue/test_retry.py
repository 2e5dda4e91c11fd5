"""Retry delays: exponential from the base, with jitter in [half, full], capped."""

from __future__ import annotations

from mailer.queue.retry import MAX_RETRY_DELAY_MS, retry_delay_ms


def test_exponential_with_jitter() -> None:
    for attempts_made, full in [(1, 1000), (2, 2000), (3, 4000), (4, 8000)]:
        delays = {retry_delay_ms(1000, attempts_made) for _ in range(200)}
        assert all(full // 2 <= d <= full for d in delays)
        assert len(delays) > 20  # jittered, not one fixed value


def test_no_base_means_no_delay_and_huge_attempts_are_capped() -> None:
    assert retry_delay_ms(0, 3) == 0
    assert retry_delay_ms(1000, 0) == 0
    assert MAX_RETRY_DELAY_MS // 2 <= retry_delay_ms(5000, 99) <= MAX_RETRY_DELAY_MS
