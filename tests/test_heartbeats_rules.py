from datetime import UTC, datetime, timedelta

from lib.activity.heartbeats import availability, beat_runs, is_alive, up_since

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def test_alive_is_60_seconds_inclusive():
    assert is_alive(NOW - 60 * S, NOW)
    assert not is_alive(NOW - 61 * S, NOW)
    assert not is_alive(None, NOW)


def test_runs_split_on_gaps_over_threshold():
    beats = [NOW - 10 * M, NOW - 9 * M, NOW - 5 * M, NOW - 4 * M - 30 * S]
    assert beat_runs(beats) == [(NOW - 10 * M, NOW - 9 * M), (NOW - 5 * M, NOW - 4 * M - 30 * S)]


def test_up_since_is_start_of_current_run_or_none_when_down():
    beats = [NOW - 10 * M, NOW - 9 * M, NOW - 2 * M, NOW - 1 * M, NOW - 10 * S]
    assert up_since(beats, NOW) == NOW - 2 * M
    assert up_since(beats[:2], NOW) is None
    assert up_since([], NOW) is None


def test_availability_counts_gaps_as_down():
    # beats every minute for the first 30 minutes of an hour, then silence
    start = NOW - 60 * M
    beats = [start + i * M for i in range(30)]
    # covered: 29 gaps of 60 s + the last beat's 60 s = 30 minutes of 60
    assert availability(beats, start, NOW) == 0.5


def test_availability_full_and_window_clipping():
    beats = [NOW - 3 * 60 * M + i * 30 * S for i in range(6 * 60 + 1)]  # every 30 s for 3 h
    assert availability(beats, NOW - 60 * M, NOW) == 1.0
    # a window reaching before the first beat starts at the first beat
    assert availability(beats, NOW - 24 * 60 * M, NOW) == 1.0
    assert availability([], NOW - 60 * M, NOW) is None
