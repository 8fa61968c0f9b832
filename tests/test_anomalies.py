"""Anomaly flags: planted spikes are flagged, a flat series is not; on reports in SQLite and
PostgreSQL; metric_anomaly alerts raised by an operator only, audited."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lib.analytics import anomalies
from lib.core.identity import Actor, PermissionDenied
from lib.core.schema import audit_log, system_alerts
from tests.support.reports import add_accounts, add_reports, report

DAY0 = date(2026, 9, 1)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def frame(account, values: dict[str, list[float]]) -> pd.DataFrame:
    n = len(next(iter(values.values())))
    days = pd.date_range("2026-09-02T02:00:00Z", periods=n, freq="D")
    return pd.DataFrame({"business_account_id": account, "report_date": days,
                         **{f"instagram_metrics.{k}": v for k, v in values.items()}})


def noisy(n, base=1000.0, seed=1):
    """Bounded noise (uniform ±3 %): its robust deviation stays below about 1.5, so only planted days flag."""
    rng = np.random.default_rng(seed)
    return list(base * (1 + rng.uniform(-0.03, 0.03, n)))


def test_planted_spikes_are_flagged_and_a_flat_series_is_not():
    reach = noisy(90)
    reach[40] *= 2.5  # a viral day
    reach[70] *= 0.3  # a dip
    flat = [500.0] * 90
    df = frame("acc-a", {"reach": reach, "impressions": flat, "website_clicks": [12] * 90})
    flags = anomalies.flag_anomalies(df, threshold=3.5)
    reach_flags = flags[flags["metric"] == "reach"]
    assert sorted(reach_flags["day"].dt.day_of_year - pd.Timestamp("2026-09-02").day_of_year) == [40, 70]
    assert set(reach_flags["direction"]) == {"up", "down"}
    up = reach_flags[reach_flags["direction"] == "up"].iloc[0]
    assert up["deviation"] > 3.5 and abs(up["baseline"] - 1000) < 50 and up["change_pct"] > 100
    assert flags[flags["metric"].isin(["impressions", "website_clicks"])].empty  # flat: no flags
    assert list(flags.columns) == list(anomalies.COLUMNS)


def test_spike_on_a_flat_series_and_too_little_history():
    flat = [500.0] * 40
    flat[30] = 900.0
    flags = anomalies.flag_anomalies(frame("a", {"profile_views": flat}), threshold=3.5)
    assert len(flags) == 1 and flags.iloc[0]["direction"] == "up"
    early = [100.0] * 20
    early[5] = 10_000.0  # only 5 days of history before it: not judged
    assert anomalies.flag_anomalies(frame("a", {"reach": early}), threshold=3.5).empty


def test_threshold_is_a_setting_and_gaps_are_allowed():
    reach = noisy(60, seed=3)
    reach[45] *= 1.25
    df = frame("a", {"reach": reach}).drop(index=[10, 11, 12])  # days without a report
    strict = anomalies.flag_anomalies(df, threshold=50)
    loose = anomalies.flag_anomalies(df, threshold=3)
    assert strict.empty and 45 in set((loose["day"] - pd.Timestamp("2026-09-02", tz="UTC")).dt.days)


def _reports(engine):
    with engine.begin() as conn:
        (acc,) = add_accounts(conn, "acme")
        rows = []
        for i in range(60):
            d = DAY0 + timedelta(days=i)
            reach = 1000 + (i % 5) * 10 + (4000 if i == 50 else 0)
            rows.append(report(acc, "daily", d, reach=reach, comparison=None))
        add_reports(conn, rows)
    return acc


def test_flags_from_daily_reports_in_the_database(engine):
    acc = _reports(engine)
    with engine.connect() as conn:
        flags = anomalies.load_flags(conn, account_ids=[str(acc)], first=DAY0 + timedelta(days=40),
                                     last=DAY0 + timedelta(days=60), threshold=3.5)
    assert flags["metric"].tolist() == ["reach"]
    assert flags.iloc[0]["value"] == 5000 and flags.iloc[0]["business_account_id"] == str(acc)


def test_metric_anomaly_alerts_operator_only_and_audited(engine):
    acc = _reports(engine)
    with engine.connect() as conn:
        flags = anomalies.load_flags(conn, account_ids=None, first=DAY0, last=DAY0 + timedelta(days=60), threshold=3.5)
    viewer = Actor("viewer@example.com", "viewer", "header")
    operator = Actor("ops@example.com", "operator", "header")
    with engine.begin() as conn, pytest.raises(PermissionDenied):
        anomalies.raise_anomaly_alerts(conn, flags, actor=viewer, now=NOW)
    for _ in range(2):  # a repeat updates the one open alert
        with engine.begin() as conn:
            ids = anomalies.raise_anomaly_alerts(conn, flags, actor=operator, now=NOW, names={str(acc): "acme"})
    with engine.connect() as conn:
        alerts = conn.execute(sa.select(system_alerts)).mappings().all()
        audits = conn.execute(sa.select(audit_log).where(audit_log.c.action == "raise_metric_anomaly")).mappings().all()
    assert len(alerts) == 1 and alerts[0]["alert_type"] == "metric_anomaly" and alerts[0]["id"] == ids[0]
    assert "Reach of @acme" in alerts[0]["message"] and "unusually high" in alerts[0]["message"]
    assert alerts[0]["details"]["count"] == 2 and alerts[0]["details"]["anomalies"][0]["metric"] == "reach"
    assert len(audits) == 2 and {a["user_id"] for a in audits} == {"ops@example.com"}


def test_worker_pass_raises_once_per_account_and_day(engine):
    with engine.begin() as conn:
        (acc,) = add_accounts(conn, "acme")
        last = NOW.date() - timedelta(days=1)  # the daily report dated today covers yesterday
        rows = [report(acc, "daily", last - timedelta(days=k), reach=1000 + (k % 5) * 10 + (5000 if k == 0 else 0),
                       comparison=None) for k in range(40)]
        add_reports(conn, rows)
    for _ in range(2):
        with engine.begin() as conn:
            anomalies.worker_pass(conn, now=NOW, threshold=3.5)
    with engine.connect() as conn:
        alerts = conn.execute(sa.select(system_alerts)).mappings().all()
    assert len(alerts) == 1 and alerts[0]["alert_type"] == "metric_anomaly"
    assert alerts[0]["details"]["count"] == 1  # the second pass left it alone
    assert alerts[0]["details"]["day"] == NOW.date().isoformat()
