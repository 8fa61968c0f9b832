"""Shared chart building blocks: the Fig helper (Plotly figures as plain dicts) and the one
bucketed bar chart (events/alerts per hour or day) that the Activity Feed and System Alerts draw."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lib.core.text import plotly_text

BUCKET_MS = {"hour": 3_600_000, "day": 86_400_000}  # one bucket in Plotly's date-axis unit (ms)


def plain(text) -> str:
    """Untrusted text for Plotly labels (Plotly interprets a few HTML tags)."""
    return plotly_text(text)  # the one escaping rule for Plotly labels lives in lib/core/text.py


class Fig:
    """A Plotly figure built as plain trace dicts on a layout (e.g. from make_subplots).

    Plotly validates every go.* trace (several ms each) and Streamlit validates the figure again;
    building dicts and validating once in st.plotly_chart is about ten times faster."""

    def __init__(self, layout_fig=None):
        self.layout_fig = layout_fig if layout_fig is not None else go.Figure()
        self.data: list[dict] = []

    def add(self, trace: dict, row: int | None = None, col: int | None = None, secondary_y: bool | None = None) -> None:
        if row is not None or secondary_y:
            sub = self.layout_fig.get_subplot(row or 1, col or 1, secondary_y=bool(secondary_y))
            trace["xaxis"] = sub.xaxis.plotly_name.replace("axis", "")
            trace["yaxis"] = sub.yaxis.plotly_name.replace("axis", "")
        self.data.append(trace)

    def to_dict(self) -> dict:
        return {"data": self.data, "layout": self.layout_fig.layout.to_plotly_json()}


def local_times(values, tz) -> pd.Series:
    """UTC instants -> naive wall-clock times in `tz` (what a Plotly date axis shows as given)."""
    return pd.to_datetime(pd.Series(values), utc=True).dt.tz_convert(tz).dt.tz_localize(None)


def bucketed_bar_chart(counts: list[dict], *, bucket: str, tz, series: str, colors: dict[str, str], key: str,
                       y_title: str, height: int, order: Iterable[str] = ()) -> None:
    """Stacked bars of `count` per time bucket ("hour"/"day"), one colour per value of `series`.

    `counts` are dicts with "bucket" (UTC start), `series` and "count". Whole buckets are named on
    the x axis: with a single bar Plotly would otherwise pick sub-millisecond ticks."""
    df = pd.DataFrame(counts, columns=["bucket", series, "count"])
    df["x"] = local_times(df["bucket"], tz)
    present = list(dict.fromkeys(df[series].astype(str)))
    names = [s for s in order if s in present] + sorted(s for s in present if s not in set(order))
    fig = Fig()
    for name in names:
        part = df[df[series].astype(str) == name]
        label = plain(name)
        fig.add(dict(type="bar", x=part["x"].to_numpy(), y=part["count"].to_numpy(), name=label,
                     marker=dict(color=colors.get(name)),
                     hovertemplate=f"{label}<br>%{{x}}<br>%{{y:,}}<extra></extra>"))
    single = df["x"].nunique() <= 1
    fig.layout_fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), barmode="stack", bargap=0.1,
                                 yaxis_title=y_title, legend_title_text=None, xaxis_title=None)
    fig.layout_fig.update_xaxes(tickformat="%b %d" if bucket == "day" else "%H:%M\n%b %d",
                                dtick=BUCKET_MS[bucket] if bucket == "day" or single else None)
    st.plotly_chart(fig.to_dict(), width="stretch", key=key, theme="streamlit")
