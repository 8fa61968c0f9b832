"""Service levels on the Queue Monitor and the Overview: time to send (p50/p95 over 24 h / 7 d / 30 d) per
action type, each target met or missed over SLO_WINDOW_DAYS, the error budget left and the last hour's
burn rate. Reads lib.health.service_levels through cached loaders; the sidebar's account narrows everything."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from lib.core.settings import parse_targets
from lib.core.text import md_escape
from lib.core.timeutil import floor_time, fmt_duration, utcnow
from lib.health.service_levels import WINDOWS, send_time_percentiles, slo_statuses
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine, lazy_expander, live_caption


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_percentiles(db_url: str, account_id, window: str, now: datetime, by_account: bool = False) -> list[dict]:
    with get_engine(db_url).connect() as conn:
        return send_time_percentiles(conn, now=now, window=WINDOWS[window], account_id=account_id,
                                     by_account=by_account)


LIVE_WINDOWS = ("24 h", "7 d")  # in the live table; 30 d (every sent row of a month) on demand below it
LONG_BUCKET_S = 600  # the 7 d and 30 d percentiles move little in 10 minutes: computed once per 10 min


@st.cache_data(ttl=LONG_BUCKET_S, max_entries=64, show_spinner=False)
def load_long_percentiles(db_url: str, account_id, window: str, bucket: datetime) -> list[dict]:
    with get_engine(db_url).connect() as conn:
        return send_time_percentiles(conn, now=bucket, window=WINDOWS[window], account_id=account_id)


def percentiles(scope: Scope, window: str, now: datetime) -> list[dict]:
    """24 h live; 7 d and 30 d from a 10-minute bucket (a 30-day window reads every row sent in it)."""
    if window == "24 h":
        return load_percentiles(scope.db_url, scope.account_id, window, now)
    return load_long_percentiles(scope.db_url, scope.account_id, window, floor_time(now, LONG_BUCKET_S))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_slo(db_url: str, account_id, targets: str, window_days: int, now: datetime):
    with get_engine(db_url).connect() as conn:
        return slo_statuses(conn, parse_targets(targets), now=now, window_days=window_days, account_id=account_id)


def _d(seconds: float | None) -> str:
    return "—" if seconds is None else fmt_duration(seconds)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def slo_frame(scope: Scope, now: datetime) -> pd.DataFrame:
    """One row per action type with a target or a sent row: percentiles per window, target, compliance, budget."""
    per_window = {w: {r["action_type"]: r for r in percentiles(scope, w, now)} for w in LIVE_WINDOWS}
    statuses = {s.target.action_type: s for s in load_slo(scope.db_url, scope.account_id, scope.settings.slo_targets,
                                                          scope.settings.slo_window_days, now)}
    actions = sorted(set(statuses) | {a for rows in per_window.values() for a in rows})
    rows = []
    for action in actions:
        row = {"action_type": action}
        for w in LIVE_WINDOWS:
            p = per_window[w].get(action)
            row[f"p50 {w}"] = _d(p and p["p50_s"])
            row[f"p95 {w}"] = _d(p and p["p95_s"])
        row["sent 24 h"] = (per_window["24 h"].get(action) or {}).get("sent", 0)
        s = statuses.get(action)
        row["target"] = s.target.describe() if s else "—"
        row[f"within target {scope.settings.slo_window_days} d"] = _pct(s and s.window.ratio)
        row["budget left"] = _pct(s and s.budget_left)
        row["burn 1 h"] = "—" if s is None or s.burn is None else f"{s.burn:.1f}×"
        row["state"] = ("no rows" if s is None or s.met is None else "met" if s.met else "missed") if s else "no target"
        rows.append(row)
    return pd.DataFrame(rows)


def show_service_levels(scope: Scope) -> None:
    """The Queue Monitor's section, refreshing with the other live panels."""
    st.subheader("Service levels")

    @st.fragment(run_every=scope.run_every)
    def panel():
        now = floor_time(utcnow(), 60)
        frame = slo_frame(scope, now)
        if frame.empty:
            st.info("No row sent in the last 30 days and no target set (SLO_TARGETS).", icon=":material/timer:")
        else:
            missed = frame[frame["state"] == "missed"]["action_type"].tolist()
            if missed:
                st.error(f"Target missed over {scope.settings.slo_window_days} d: {', '.join(missed)}",
                         icon=":material/timer_off:")
            st.dataframe(frame, hide_index=True, width="stretch", key="slo_table")
        st.caption("Time to send: queued (created_at) → sent (updated_at of the sent row), nearest-rank percentiles "
                   "(7 d and 30 d recomputed every 10 minutes; 30 d below). "
                   "Late, dead-lettered and overdue unsent rows count against a target; the burn rate is the last "
                   f"hour's misses over the budget (an slo_burn alert above {scope.settings.slo_burn_rate:g}×).")
        live_caption(scope, utcnow())

    panel()
    more = lazy_expander("30 days, and by account", key="slo_more", icon=":material/calendar_month:")
    if more is not None:
        with more:
            now = floor_time(utcnow(), 60)
            month = percentiles(scope, "30 d", now)
            st.dataframe(pd.DataFrame([{"action_type": r["action_type"], "sent 30 d": r["sent"],
                                        "p50 30 d": _d(r["p50_s"]), "p95 30 d": _d(r["p95_s"])} for r in month],
                                      columns=["action_type", "sent 30 d", "p50 30 d", "p95 30 d"]),
                         hide_index=True, width="stretch", key="slo_month_table")
            rows = load_percentiles(scope.db_url, scope.account_id, "7 d", now, True)
            st.dataframe(pd.DataFrame([{"account": scope.account_name(r["business_account_id"]),
                                        "action_type": r["action_type"], "sent 7 d": r["sent"],
                                        "p50 7 d": _d(r["p50_s"]), "p95 7 d": _d(r["p95_s"])} for r in rows],
                                      columns=["account", "action_type", "sent 7 d", "p50 7 d", "p95 7 d"]),
                         hide_index=True, width="stretch", key="slo_by_account_table")


def overview_block(scope: Scope, now: datetime) -> None:
    """The Overview's lines: each target with its compliance, and the 24 h p95."""
    now = floor_time(now, 60)
    statuses = load_slo(scope.db_url, scope.account_id, scope.settings.slo_targets, scope.settings.slo_window_days,
                        now)
    p95 = {r["action_type"]: r["p95_s"] for r in load_percentiles(scope.db_url, scope.account_id, "24 h", now)}
    with st.container(border=True, key="ov-slo"):
        st.markdown(f"**Service levels** · {scope.settings.slo_window_days} d")
        if not statuses:
            st.caption("No targets set (SLO_TARGETS).")
        for s in statuses:
            badge = (":gray-badge[no rows]" if s.met is None else ":green-badge[met]" if s.met
                     else ":red-badge[missed]")
            burn = "" if s.burn is None or s.burn < scope.settings.slo_burn_rate else \
                f" · :red-badge[burning {s.burn:.0f}×]"
            st.markdown(f"{badge} {md_escape(s.target.describe())}: {_pct(s.window.ratio)} · p95 24 h "
                        f"{_d(p95.get(s.target.action_type))}{burn}")
        st.page_link("pages/queue_monitor.py", label="Queue Monitor", icon=":material/arrow_forward:")
