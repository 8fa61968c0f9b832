"""lib.activity.throughput.throughput_history over worker_ticks, on SQLite and PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.activity.throughput import throughput_history
from lib.core.schema import worker_ticks

NOW = datetime(2026, 12, 1, 21, 40, tzinfo=UTC)


def tick(started, seconds, sent=0, failed=0, dlq=0, finished=True):
    return {"id": uuid.uuid4(), "host": "h", "pid": 1, "started_at": started,
            "finished_at": started + timedelta(seconds=seconds) if finished else None,
            "claimed": sent + failed + dlq, "sent": sent, "failed": failed, "dlq": dlq, "rescued": 0}


def test_hourly_sent_failed_dlq_and_tick_duration_over_24h_and_7d(engine):
    rows = [
        tick(NOW - timedelta(minutes=5), 2.0, sent=3, failed=1),           # current hour (21:00)
        tick(NOW - timedelta(minutes=30), 4.0, sent=2, dlq=1),             # 21:10, same hour
        tick(NOW - timedelta(minutes=1), 0, finished=False),               # running: counted, no duration
        tick(NOW - timedelta(hours=3), 1.5, sent=10),                      # 18:40
        tick(NOW - timedelta(hours=23, minutes=30), 1.0, failed=7),        # 22:10 yesterday: first hour of 24 h
        tick(NOW - timedelta(hours=24, minutes=30), 1.0, sent=100),        # 21:10 yesterday: outside 24 h
        tick(NOW - timedelta(days=6, hours=20), 3.0, dlq=5),               # inside 7 d
        tick(NOW - timedelta(days=8), 3.0, sent=1000),                     # outside 7 d
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(worker_ticks), rows)
    with engine.connect() as conn:
        day = throughput_history(conn, now=NOW, window="24h")
        week = throughput_history(conn, now=NOW, window="7d")

    assert len(day) == 24 and len(week) == 168
    assert [r["hour"] for r in day] == [datetime(2026, 11, 30, 22, tzinfo=UTC) + timedelta(hours=i)
                                        for i in range(24)]
    current = day[-1]
    assert (current["ticks"], current["sent"], current["failed"], current["dlq"]) == (3, 5, 1, 1)
    assert current["avg_duration_s"] == pytest.approx(3.0, abs=0.01)
    assert current["max_duration_s"] == pytest.approx(4.0, abs=0.01)
    by_hour = {r["hour"].hour: r for r in day}
    assert by_hour[18]["sent"] == 10 and by_hour[18]["avg_duration_s"] == pytest.approx(1.5, abs=0.01)
    assert day[0]["failed"] == 7
    assert sum(r["sent"] for r in day) == 15  # yesterday's 21:10 tick is outside the 24 h window
    empty = by_hour[12]
    assert (empty["ticks"], empty["sent"], empty["avg_duration_s"]) == (0, 0, None)
    assert sum(r["dlq"] for r in week) == 6 and sum(r["sent"] for r in week) == 115


def test_an_unknown_window_is_refused(engine):
    with engine.connect() as conn, pytest.raises(ValueError):
        throughput_history(conn, now=NOW, window="30d")
