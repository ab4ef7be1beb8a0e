"""The GUI heartbeat probe that responsiveness benchmarks rely on."""

from __future__ import annotations

import time

from pytestqt.qtbot import QtBot

from tests.heartbeat import Heartbeat


def test_heartbeat_measures_a_blocked_event_loop(qtbot: QtBot) -> None:
    with Heartbeat() as beat:
        qtbot.wait(100)
        time.sleep(0.3)  # the GUI thread does blocking work: the window is frozen for 300 ms
        qtbot.wait(100)
    assert beat.max_gap_ms >= 300
    assert len(beat.gaps_ms) >= 3
    assert beat.percentile_ms(50) < beat.max_gap_ms


def test_heartbeat_keeps_beating_while_idle(qtbot: QtBot) -> None:
    with Heartbeat(interval_ms=10) as beat:
        qtbot.wait(300)
    assert len(beat.gaps_ms) >= 5
    assert all(gap >= 0 for gap in beat.gaps_ms)


def test_percentiles_use_the_nearest_rank() -> None:
    beat = Heartbeat()
    beat.gaps_ms = [float(v) for v in range(1, 101)]
    assert beat.percentile_ms(99) == 99.0
    assert beat.percentile_ms(50) == 50.0
    assert beat.percentile_ms(100) == 100.0
    assert Heartbeat().percentile_ms(99) == 0.0
