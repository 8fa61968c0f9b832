"""Schedule rules with a fixed now: period + grace, cron + grace, liveness, runs and availability."""
from datetime import UTC, datetime, timedelta

import pytest

from lib.activity.agent_schedules import DEFAULT_SCHEDULE, Schedule, ScheduleError, liveness, make_schedule
from lib.activity.heartbeats import availability, beat_runs, is_alive, up_since

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
FIVE_MIN = make_schedule(period_s=300, grace_s=60)
NIGHTLY = make_schedule(cron="0 2 * * *", grace_s=1800)  # 02:00 UTC, half an hour's grace


def test_the_default_is_the_60_second_rule():
    assert liveness(NOW - 60 * S, NOW) == "up" and liveness(NOW - 61 * S, NOW) == "down"
    assert liveness(None, NOW) == "down"
    assert DEFAULT_SCHEDULE.describe() == "beats every 1 min (default)"


def test_period_up_late_down():
    assert liveness(NOW - 5 * M, NOW, FIVE_MIN) == "up"
    assert liveness(NOW - 5 * M - S, NOW, FIVE_MIN) == "late"
    assert liveness(NOW - 6 * M, NOW, FIVE_MIN) == "late"
    assert liveness(NOW - 6 * M - S, NOW, FIVE_MIN) == "down"
    assert is_alive(NOW - 6 * M, NOW, FIVE_MIN) and not is_alive(NOW - 6 * M - S, NOW, FIVE_MIN)
    assert FIVE_MIN.describe() == "beats every 5 min + 1 min grace"


def test_an_agent_beating_every_4_minutes_on_a_5_minute_period_is_never_down():
    beats = [NOW - 24 * H + i * 4 * M for i in range(24 * 15 + 1)]
    period = make_schedule(period_s=300, grace_s=0)
    assert availability(beats, NOW - 24 * H, NOW, period) == 1.0
    assert len(beat_runs(beats, period)) == 1
    assert up_since(beats, NOW, period) == beats[0]
    # under the default 60 s rule the same agent would be down most of the time
    assert availability(beats, NOW - 24 * H, NOW) == pytest.approx(0.25, abs=0.01)


def test_nightly_agent_asleep_between_runs_is_up_and_a_missed_run_is_down_after_the_grace():
    last_run = datetime(2026, 11, 25, 2, 10, tzinfo=UTC)  # ran 02:00-02:10 today
    noon = NOW
    assert liveness(last_run, noon, NIGHTLY) == "up"
    assert NIGHTLY.due(last_run) == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert liveness(last_run, datetime(2026, 11, 26, 2, 20, tzinfo=UTC), NIGHTLY) == "late"
    assert liveness(last_run, datetime(2026, 11, 26, 2, 31, tzinfo=UTC), NIGHTLY) == "down"


def test_nightly_availability_counts_only_the_missed_night():
    runs = []
    for day in (22, 23, 25):  # the night of the 24th was missed
        start = datetime(2026, 11, day, 2, 0, tzinfo=UTC)
        runs += [start + i * 30 * S for i in range(21)]  # ten minutes of beats
    window = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    # down from 24th 02:30 (02:00 + grace) until the run of the 25th at 02:00: 23.5 h of 82 h
    expected = 1 - 23.5 / 82
    assert availability(runs, window, NOW, NIGHTLY) == pytest.approx(expected)
    assert len(beat_runs(runs, NIGHTLY)) == 2


def test_make_schedule_refuses_what_cannot_work():
    with pytest.raises(ScheduleError, match="either a period or a cron"):
        make_schedule()
    with pytest.raises(ScheduleError, match="either a period or a cron"):
        make_schedule(period_s=60, cron="* * * * *")
    with pytest.raises(ScheduleError, match="between 10 s"):
        make_schedule(period_s=5)
    with pytest.raises(ScheduleError, match="five fields"):
        make_schedule(cron="0 2 * * * *")
    with pytest.raises(ScheduleError, match="five fields"):
        make_schedule(cron="every night")
    with pytest.raises(ScheduleError, match="grace"):
        make_schedule(period_s=60, grace_s=-1)
    with pytest.raises(ScheduleError, match="target"):
        make_schedule(period_s=60, availability_target=1.5)
    assert make_schedule(cron=" 0 2 * * * ", grace_s=None).cron == "0 2 * * *"


def test_lookback_covers_the_longest_wait():
    assert FIVE_MIN.lookback(NOW) == 6 * M
    assert NIGHTLY.lookback(NOW) == 24 * H + 30 * M
    assert Schedule(cron="0 3 * * 1", grace_s=0).lookback(NOW) == 7 * 24 * H
