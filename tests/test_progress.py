"""sftlab.progress: a long phase says where it is after 3 s and every 30 s; a short one says nothing."""

from __future__ import annotations

import logging


def test_a_long_phase_says_how_far_it_is_and_a_short_one_nothing(caplog):
    from sftlab.progress import Phase

    now = [0.0]
    with caplog.at_level(logging.INFO, logger="sftlab"):
        with Phase("encoding", 100, "conversations", clock=lambda: now[0]) as phase:
            for _ in range(100):
                now[0] += 1.0  # a conversation a second
                phase.advance()
    # The first line after 3 s (3 of 100 done: 97 s left at that pace), then every 30 s, then the end.
    assert [r.getMessage() for r in caplog.records] == [
        "encoding: 3/100 conversations, 1 min 37 s left",
        "encoding: 33/100 conversations, 1 min 07 s left",
        "encoding: 63/100 conversations, 37 s left",
        "encoding: 93/100 conversations, 7 s left",
        "encoding: 100 conversations done in 1 min 40 s",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sftlab"):
        with Phase("encoding", 10, "conversations", clock=lambda: now[0]) as phase:
            for _ in range(10):
                now[0] += 0.2
                phase.advance()
    assert caplog.records == []


def test_durations_as_people_read_them():
    from sftlab.progress import duration

    assert [duration(s) for s in (0, 12.4, 59.6, 245, 3600, 3725)] == ["0 s", "12 s", "1 min 00 s", "4 min 05 s",
                                                                        "1 h 00 min", "1 h 02 min"]
