"""The promtail model reads each container's log from where it stopped: a line is shipped once,
the lines before the last read's second are not asked for again (``sinceTime``), and the lines of
that second, which the API sends again, are skipped."""

from __future__ import annotations

from labsim.apps.promtail import Position


def test_new_lines_are_shipped_once_and_old_ones_not_read_again() -> None:
    position = Position()
    assert position.since() == ""  # the first read: the whole log
    first = "2026-12-06T10:00:00Z a\n2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n"
    assert [line for _, line in position.read(first)] == ["a", "b", "c"]
    assert position.since() == "&sinceTime=2026-12-06T10%3A00%3A01Z"  # not from the start again

    # What the API answers from that second on: b and c again (same second), then the new lines.
    again = "2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n2026-12-06T10:00:01Z d\n2026-12-06T10:00:02Z e\n"
    shipped = position.read(again)
    assert [line for _, line in shipped] == ["d", "e"]
    assert position.since() == "&sinceTime=2026-12-06T10%3A00%3A02Z"
    assert position.read("2026-12-06T10:00:02Z e\n") == []  # nothing new: nothing shipped


def test_lines_of_one_second_keep_their_order_across_reads() -> None:
    position = Position()
    stamps = [int(ns) for ns, _ in position.read("2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n")]
    stamps += [int(ns) for ns, _ in position.read("2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n"
                                                  "2026-12-06T10:00:01Z d\nnot a log line\n")]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3  # Loki takes a stream's entries in order
