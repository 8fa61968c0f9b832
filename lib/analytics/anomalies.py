"""Anomaly flags on daily reports: a robust baseline per account and metric.

For every day, the baseline is the median of the same metric over the previous 28 days (the day
itself excluded) and the spread is the MAD (median absolute deviation) of those days, scaled by
1.4826 so it estimates a standard deviation for normal data. The deviation is the robust z-score
(value - median) / (1.4826 * MAD); a day is flagged when |deviation| > threshold (setting
ANOMALY_THRESHOLD, 3.5 by default: Iglewicz and Hoaglin's cut-off for modified z-scores). A day
needs at least MIN_HISTORY earlier days in its window. A window with no spread at all (MAD = 0, a
flat series) gives no flag unless the day differs from the median by more than 1 % of it: a flat
series never flags, a spike on a flat series does.

Pure (pandas/numpy); `now` is not needed. Optionally (ANOMALY_ALERTS=on, off by default) flags are
raised as `metric_anomaly` alerts (raise_alerts), one open alert per account, so they travel the
alert routes.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from lib.alerts.store import open_or_update_alert
from lib.analytics import catalogue
from lib.analytics import reports as an
from lib.core.audit import log_audit
from lib.core.identity import require_operator
from lib.core.schema import instagram_business_accounts, system_alerts

WINDOW_DAYS = 28
MIN_HISTORY = 14
MAD_SCALE = 1.4826
FLAT_TOLERANCE = 0.01  # with MAD = 0: a change of more than 1 % of the median still counts
ALERT_TYPE = "metric_anomaly"
_WATCHED = {  # column -> short name (in flags and alert details)
    "instagram_metrics.reach": "reach",
    "instagram_metrics.impressions": "impressions",
    "instagram_metrics.avg_engagement_rate": "engagement_rate",
    "instagram_metrics.follower_growth": "follower_growth",
    "instagram_metrics.profile_views": "profile_views",
    "instagram_metrics.website_clicks": "website_clicks",
}
METRICS: dict[str, tuple[str, str]] = {c: (catalogue.metric(c).label, short) for c, short in _WATCHED.items()}
COLUMNS = ("business_account_id", "report_date", "day", "metric", "label", "value", "baseline", "mad", "deviation",
           "direction", "change_pct")


def robust_scores(values: np.ndarray, window: int = WINDOW_DAYS, min_history: int = MIN_HISTORY,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a daily series (NaN = no report that day): per day the median and the scaled MAD of the
    previous `window` days and the robust deviation; NaN where there is too little history."""
    x = np.asarray(values, dtype="float64")
    n = len(x)
    median = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    dev = np.full(n, np.nan)
    if n <= 1:
        return median, spread, dev
    padded = np.concatenate([np.full(window, np.nan), x])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[:n]  # row i: the `window` days before i
    enough = np.sum(~np.isnan(windows), axis=1) >= min_history
    if not enough.any():
        return median, spread, dev
    w = windows[enough]
    with np.errstate(all="ignore"):
        med = np.nanmedian(w, axis=1)
        mad = np.nanmedian(np.abs(w - med[:, None]), axis=1) * MAD_SCALE
    median[enough], spread[enough] = med, mad
    diff = x - median
    with np.errstate(all="ignore"):
        scaled = np.where(spread > 0, diff / spread, np.nan)
        flat = (spread == 0) & (np.abs(diff) > FLAT_TOLERANCE * np.abs(median)) & (diff != 0)
        # no spread: a clear departure is an anomaly of 'infinite' size; report it as ±1e9 (numbers stay numbers)
        scaled = np.where(flat, np.sign(diff) * 1e9, np.where(spread == 0, 0.0, scaled))
    dev[enough] = scaled[enough]
    dev[np.isnan(x)] = np.nan
    return median, spread, dev


def flag_anomalies(df: pd.DataFrame, *, threshold: float, metrics: dict[str, tuple[str, str]] | None = None,
                   since: date | None = None) -> pd.DataFrame:
    """Flags on a frame of daily reports (lib.analytics.reports.reports_frame: business_account_id,
    report_date and the flattened metric columns). One row per (account, day, metric) beyond the
    threshold, in COLUMNS order, newest first. `since`: only flags from that day on (the frame
    should reach WINDOW_DAYS further back for the baseline)."""
    metrics = METRICS if metrics is None else metrics
    rows: list[dict[str, Any]] = []
    if df is None or df.empty or "report_date" not in df:
        return pd.DataFrame(columns=list(COLUMNS))
    work = df[["business_account_id", "report_date", *[c for c in metrics if c in df]]].copy()
    work["day"] = pd.to_datetime(work["report_date"], utc=True).dt.floor("D")
    for acc, part in work.groupby("business_account_id", sort=True):
        part = part.sort_values("report_date").drop_duplicates("day", keep="last")
        full = pd.date_range(part["day"].min(), part["day"].max(), freq="D", tz="UTC")
        indexed = part.set_index("day").reindex(full)
        for col, (label, short) in metrics.items():
            if col not in indexed:
                continue
            values = pd.to_numeric(indexed[col], errors="coerce").to_numpy(dtype="float64")
            med, spread, dev = robust_scores(values)
            hits = np.where(np.abs(np.nan_to_num(dev, nan=0.0)) > threshold)[0]
            for i in hits:
                day = full[i]
                if since is not None and day.date() < since:
                    continue
                base = med[i]
                rows.append({
                    "business_account_id": acc, "report_date": indexed["report_date"].iloc[i], "day": day,
                    "metric": short, "label": label, "value": float(values[i]), "baseline": float(base),
                    "mad": float(spread[i]), "deviation": float(round(dev[i], 2)),
                    "direction": "up" if values[i] > base else "down",
                    "change_pct": None if base == 0 else float(round((values[i] - base) / abs(base) * 100, 1)),
                })
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    if out.empty:
        return out
    out["report_date"] = pd.to_datetime(out["report_date"], utc=True)
    out["change_pct"] = pd.to_numeric(out["change_pct"], errors="coerce").astype("float64")
    return out.sort_values(["day", "business_account_id", "metric"], ascending=[False, True, True],
                           kind="stable").reset_index(drop=True)


def load_flags(conn: sa.Connection, *, account_ids=None, first: date, last: date, threshold: float) -> pd.DataFrame:
    """Flags of the daily reports dated first..last (the 28 days before are read for the baseline)."""
    start, end = an.day_bounds(first - timedelta(days=WINDOW_DAYS + 1), last)
    reports = an.load_reports(conn, account_ids=account_ids, report_type="daily", start=start, end=end,
                              sections=("instagram_metrics",), full=False)
    return flag_anomalies(an.reports_frame(reports, lists=False), threshold=threshold, since=first)


def alert_message(flag: dict[str, Any], account: str | None) -> str:
    who = f"@{account}" if account else "an account"
    pct = flag.get("change_pct")
    change = f" ({pct:+.0f} % vs the 28-day median {flag['baseline']:,.6g})" if pct is not None and pct == pct \
        else f" (28-day median {flag['baseline']:,.6g})"
    return (f"{flag['label']} of {who} on {pd.Timestamp(flag['day']).date()} was unusually "
            f"{'high' if flag['direction'] == 'up' else 'low'}: {flag['value']:,.6g}{change}")


def raise_alerts(conn: sa.Connection, flags: pd.DataFrame, *, now: datetime, names: dict[str, str] | None = None,
                 day: date | None = None) -> list[uuid.UUID]:
    """Raise (or update) one open metric_anomaly alert per account for the flags of `day` (the newest
    flagged day when None). Returns the alert ids."""
    if flags.empty:
        return []
    day = day or flags["day"].max().date()
    todays = flags[flags["day"].dt.date == day]
    ids = []
    for acc, part in todays.groupby("business_account_id", sort=True):
        items = part.to_dict("records")
        account = (names or {}).get(str(acc))
        message = "; ".join(alert_message(f, account) for f in items)
        details = {"business_account_id": str(acc), "day": day.isoformat(),
                   "anomalies": [{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                  for k, v in f.items() if k in ("metric", "value", "baseline", "deviation",
                                                                  "direction", "change_pct", "day")}
                                 for f in items]}
        ids.append(open_or_update_alert(conn, alert_type=ALERT_TYPE, message=message, now=now,
                                        business_account_id=uuid.UUID(str(acc)), details=details))
    return ids


def raise_anomaly_alerts(conn: sa.Connection, flags: pd.DataFrame, *, actor, now: datetime,
                         names: dict[str, str] | None = None, day: date | None = None) -> list[uuid.UUID]:
    """An operator raises the flags of `day` as metric_anomaly alerts (checked: operators only;
    audited under the operator's name)."""
    require_operator(actor, "raise metric_anomaly alerts")
    ids = raise_alerts(conn, flags, now=now, names=names, day=day)
    for alert_id in ids:
        log_audit(conn, event_type="alert_raised", action="raise_metric_anomaly", resource_type="system_alerts",
                  resource_id=str(alert_id), now=now, user_id=actor.name, success=True,
                  details={"alert_type": ALERT_TYPE, "flags": int(len(flags))})
    return ids


def worker_pass(conn: sa.Connection, *, now: datetime, threshold: float) -> list[uuid.UUID]:
    """What the worker does when ANOMALY_ALERTS is on (at most hourly): the flags of the newest daily
    reports (yesterday's or today's) become metric_anomaly alerts, once per account and day (an open
    alert that already speaks of that day is left alone, so no repeat count grows)."""
    today = now.date()
    flags = load_flags(conn, account_ids=None, first=today - timedelta(days=1), last=today, threshold=threshold)
    if flags.empty:
        return []
    day = flags["day"].max().date()
    t = system_alerts
    done = {str(r.business_account_id) for r in conn.execute(
        sa.select(t.c.business_account_id, t.c.details).where(t.c.alert_type == ALERT_TYPE, t.c.resolved.is_(False)))
        if isinstance(r.details, dict) and r.details.get("day") == day.isoformat()}
    todo = flags[(flags["day"].dt.date == day) & ~flags["business_account_id"].astype(str).isin(done)]
    a = instagram_business_accounts
    names = {str(r.id): r.username for r in conn.execute(sa.select(a.c.id, a.c.username))}
    return raise_alerts(conn, todo, now=now, names=names, day=day)
