"""labkit.polling: the pauses grow to their bound; ``until`` returns what it saw, done or timed out."""

from __future__ import annotations

import itertools

from labkit import polling


def test_pauses_start_small_and_grow_to_their_bound() -> None:
    assert list(itertools.islice(polling.pauses(first=0.1, most=0.5, factor=2), 5)) == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_until_returns_the_first_look_that_is_done() -> None:
    looks = iter(range(10))
    assert polling.until(lambda: next(looks), lambda seen: seen == 3, timeout=5, most=0.01) == 3
    assert next(looks) == 4  # it stopped looking there


def test_until_returns_the_last_look_at_the_timeout() -> None:
    looks = iter(range(1000))
    seen = polling.until(lambda: next(looks), lambda _: False, timeout=0.2, most=0.02)
    assert 0 < seen < 999 and next(looks) == seen + 1
