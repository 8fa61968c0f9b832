from datetime import UTC, datetime, timedelta

import pytest

from lib.core.timebuckets import bucket_expr, bucket_for_range, bucket_value

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_bucket_for_range():
    assert bucket_for_range(NOW - timedelta(hours=24), NOW) == "hour"
    assert bucket_for_range(NOW - timedelta(days=2), NOW) == "hour"
    assert bucket_for_range(NOW - timedelta(days=7), NOW) == "day"
    assert bucket_for_range(None, NOW) == "day"


def test_bucket_value_normalises_both_dialects():
    assert bucket_value("2026-11-25 13:00:00") == datetime(2026, 11, 25, 13, tzinfo=UTC)
    assert bucket_value(datetime(2026, 11, 25, 13)) == datetime(2026, 11, 25, 13, tzinfo=UTC)


def test_unknown_bucket_is_refused():
    import sqlalchemy as sa

    with pytest.raises(ValueError):
        bucket_expr(sa.column("t"), "week", "sqlite")


def test_cron_in_words():
    from lib.core.timeutil import cron_in_words
    assert cron_in_words("0 8 * * 1") == "every Monday at 08:00"
    assert cron_in_words("30 6 * * *") == "every day at 06:30"
    assert cron_in_words("0 8 * * 0") == cron_in_words("0 8 * * 7") == "every Sunday at 08:00"
    for other in ("*/5 * * * *", "0 8 1 * *", "0 8 * * 1-5", "0 25 * * 1", "", "0 8 * *"):
        assert cron_in_words(other) is None
