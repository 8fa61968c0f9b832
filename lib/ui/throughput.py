"""Queue Monitor: the worker's throughput history (lib.activity.throughput over worker_ticks) as a chart."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from lib.activity.throughput import WINDOWS, throughput_history
from lib.core.timeutil import floor_time, utcnow
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine, lazy_expander

SERIES = (("sent", "sent", "#3f9c6d"), ("failed", "failed (retry scheduled)", "#e4572e"),
          ("dlq", "dead-lettered", "#a31621"))
PANEL = "qm_throughput_open"  # the lazy Throughput section: True while open


@st.cache_data(ttl=CACHE_TTL_S, max_entries=16, show_spinner=False)
def load_throughput(db_url: str, window: str, now: datetime) -> list[dict[str, Any]]:
    with get_engine(db_url).connect() as conn:
        return throughput_history(conn, now=now, window=window)


def throughput_figure(rows: list[dict[str, Any]], tz) -> go.Figure:
    x = [r["hour"].astimezone(tz) for r in rows]
    fig = go.Figure()
    for key, name, color in SERIES:
        fig.add_bar(name=name, x=x, y=[r[key] for r in rows], marker_color=color)
    fig.add_scatter(name="tick duration (avg)", x=x, y=[r["avg_duration_s"] for r in rows], yaxis="y2",
                    mode="lines+markers", line=dict(color="#4c78a8"), connectgaps=False)
    fig.add_scatter(name="tick duration (max)", x=x, y=[r["max_duration_s"] for r in rows], yaxis="y2",
                    mode="lines", line=dict(color="#4c78a8", dash="dot"), connectgaps=False)
    fig.update_layout(barmode="stack", height=320, margin=dict(l=0, r=0, t=10, b=0),
                      legend=dict(orientation="h", y=-0.2), yaxis=dict(title="rows per hour"),
                      yaxis2=dict(title="tick seconds", overlaying="y", side="right", rangemode="tozero",
                                  showgrid=False))
    return fig


def show_throughput(scope: Scope) -> None:
    # lazy, between the queue's state and the triage table the operator came for: closed, neither
    # the query nor the chart runs
    panel = lazy_expander("Throughput: rows and tick durations per hour", key=PANEL, icon=":material/speed:")
    if panel is None:
        return
    with panel:
        _throughput(scope)


def _throughput(scope: Scope) -> None:
    window = st.segmented_control("Window", list(WINDOWS), default="24h", key="qm_throughput_window",
                                  format_func=lambda w: {"24h": "24 h", "7d": "7 d"}[w],
                                  label_visibility="collapsed") or "24h"
    rows = load_throughput(scope.db_url, window, floor_time(utcnow(), 60))
    if not any(r["ticks"] for r in rows):
        st.caption("No worker ticks in this window: nothing was sent or retried.")  # the worker line above warns
        return
    totals = {k: sum(r[k] for r in rows) for k in ("ticks", "sent", "failed", "dlq")}
    st.caption(f"Per hour, all accounts (worker_ticks): {totals['sent']:,} sent, {totals['failed']:,} failed, "
               f"{totals['dlq']:,} dead-lettered in {totals['ticks']:,} ticks.")
    st.plotly_chart(throughput_figure(rows, scope.tz), width="stretch", key="qm_throughput_chart")
