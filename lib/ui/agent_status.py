"""Agent Status: cached loaders and rendering for pages/agent_status.py."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from lib.activity.agent_schedules import load_schedules
from lib.activity.heartbeats import LIVENESS_THRESHOLD, AgentStatus, agent_statuses, beat_runs, beats_by_agent
from lib.alerts.maintenance import load_windows
from lib.core.timeutil import floor_time, fmt_duration, fmt_local, utcnow
from lib.ui.charts import Fig, local_times, plain
from lib.ui.shell import CACHE_TTL_S, get_engine
from lib.ui.text import ago, md_escape

WINDOWS = {"1 h": timedelta(hours=1), "24 h": timedelta(hours=24), "7 d": timedelta(days=7)}
DEFAULT_WINDOW = "24 h"


class Keys:
    """The page's session-state and element keys (tests use these names too)."""
    WINDOW = "beat_window"  # the heartbeat timeline's window (a key of WINDOWS)

    @staticmethod
    def card(agent_id: str) -> str:  # an agent's status card
        return f"agent-card-{agent_id}"

    @staticmethod
    def timeline(window: str) -> str:  # the heartbeat timeline chart of a window
        return f"beats_{window}"


def status_time() -> datetime:
    """The cache key time of load_agent_statuses: every page asks with the same 5 s bucket."""
    return floor_time(utcnow(), 5)


@st.cache_data(ttl=5, max_entries=32, show_spinner=False)
def load_agent_statuses(db_url: str, now: datetime) -> list[AgentStatus]:
    with get_engine(db_url).connect() as conn:
        return agent_statuses(conn, now=now)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_runs(db_url: str, window: str, now: datetime) -> pd.DataFrame:
    """Unbroken runs of beats per agent in the window (by each agent's schedule), one row per run."""
    with get_engine(db_url).connect() as conn:
        beats = beats_by_agent(conn, since=now - WINDOWS[window], until=now)
        schedules = load_schedules(conn)
    rows = [
        {"agent_id": agent, "start": start, "end": end}
        for agent, times in beats.items()
        for start, end in beat_runs(times, schedules.get(agent, LIVENESS_THRESHOLD))
    ]
    return pd.DataFrame(rows, columns=["agent_id", "start", "end"])


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_maintenance_spans(db_url: str, window: str, now: datetime, agent_ids: tuple[str, ...]) -> pd.DataFrame:
    """The maintenance occurrences covering each agent in the window, one row per agent and occurrence."""
    since = now - WINDOWS[window]
    with get_engine(db_url).connect() as conn:
        windows = load_windows(conn, now=now, since=since)
    rows = [{"agent_id": agent, "start": max(start, since), "end": min(end, now)}
            for w in windows for agent in agent_ids if w.covers(agent_id=agent)
            for start, end in w.occurrences(since, now)]
    return pd.DataFrame(rows, columns=["agent_id", "start", "end"])


def show_banner(statuses: list[AgentStatus]) -> None:
    down = [s.agent_id for s in statuses if not s.alive]
    late = [s.agent_id for s in statuses if s.state == "late"]
    if not down:
        n = len(statuses)
        note = f" · late (within grace): {', '.join(md_escape(a) for a in late)}" if late else ""
        st.success(f"All {n} agent{'s' if n != 1 else ''} alive{note}", icon=":material/check_circle:")
    else:
        st.error(f"{len(down)} of {len(statuses)} agents down: {', '.join(md_escape(a) for a in down)}",
                 icon=":material/error:")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _span(label: str, window: timedelta, beats_since: datetime | None) -> str:
    """The window's name, or the shorter span the beats cover ("over 5 h"): an agent that has beaten
    for a day has no 7-day availability, and saying "7 d" would make it equal the 24-hour one."""
    if beats_since is None:
        return label
    covered = utcnow() - beats_since
    return label if covered >= window * 0.99 else f"{label} (over {fmt_duration(covered.total_seconds())})"


def show_cards(statuses: list[AgentStatus], now: datetime, tz) -> None:
    cols = st.columns(min(len(statuses), 4) or 1)
    for i, s in enumerate(statuses):
        with cols[i % len(cols)].container(border=True, key=Keys.card(s.agent_id)):
            st.markdown(f"**{md_escape(s.agent_id)}**")
            if s.state == "up":
                st.badge("alive", icon=":material/check_circle:", color="green")
            elif s.state == "late":
                st.badge("late", icon=":material/schedule:", color="orange")
            else:
                st.badge("down", icon=":material/error:", color="red")
            st.metric("Last beat", ago(s.last_beat_at), help=fmt_local(s.last_beat_at, tz))
            st.caption(f"Last beat: {fmt_local(s.last_beat_at, tz)}")
            st.caption(f"Schedule: {s.schedule.describe()} · next beat expected {ago(s.due_at)}")
            if s.maintenance_until is not None:
                st.badge(f"in maintenance until {fmt_local(s.maintenance_until, tz, with_seconds=False)}",
                         icon=":material/construction:", color="blue")
            if not s.history:
                st.caption("Only the latest beat is stored for this agent: no uptime history.")
                continue
            if s.alive or s.last_beat_at is None:
                since = "—" if s.up_since is None else fmt_local(s.up_since, tz, with_seconds=False)
                prefix = "before " if s.up_since_before_window else ""
                st.caption(f"Up since: {prefix}{since}" + ("" if s.up_since is None else f" ({ago(s.up_since)})"))
            else:  # counted from the last beat: nothing was heard after it
                st.caption(f"Down since {fmt_local(s.last_beat_at, tz, with_seconds=False)}, "
                           f"{fmt_duration((utcnow() - s.last_beat_at).total_seconds())}")
            st.markdown(f"Availability · {_span('24 h', timedelta(hours=24), s.beats_since)} **{_pct(s.availability_24h)}**"
                        f" · {_span('7 d', timedelta(days=7), s.beats_since)} **{_pct(s.availability_7d)}**")
            target = s.schedule.availability_target
            if target is not None and s.availability_7d is not None:
                if s.below_target:
                    st.markdown(f":red-badge[below target] 7 d {_pct(s.availability_7d)} < {_pct(target)}")
                else:
                    st.markdown(f":green-badge[target met] 7 d ≥ {_pct(target)}")


def show_timeline(runs: pd.DataFrame, window: str, now: datetime, tz, maintenance: pd.DataFrame | None = None) -> None:
    if runs.empty:
        st.info(f"No heartbeats in the last {window}.")
        return
    df = runs.copy()
    # A lone beat is a zero-length run: give it a visible width.
    df["end"] = df[["start", "end"]].apply(lambda r: max(r["end"], r["start"] + timedelta(seconds=30)), axis=1)
    start, end = local_times(df["start"], tz), local_times(df["end"], tz)
    # horizontal bars from start to end on a date axis, as plain trace dicts (px.timeline costs ~10x)
    fig = Fig()
    fig.add(dict(type="bar", orientation="h", base=start.dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(),
                 x=((end - start).dt.total_seconds() * 1000).to_numpy(), y=[plain(a) for a in df["agent_id"]],
                 marker=dict(color="#3f9c6d"), hovertemplate="%{y}<br>%{base} → %{x}<extra></extra>", showlegend=False))
    if maintenance is not None and not maintenance.empty:  # under the runs: planned downtime, in grey
        m_start, m_end = local_times(maintenance["start"], tz), local_times(maintenance["end"], tz)
        fig.add(dict(type="bar", orientation="h", base=m_start.dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(),
                     x=((m_end - m_start).dt.total_seconds() * 1000).to_numpy(),
                     y=[plain(a) for a in maintenance["agent_id"]], marker=dict(color="#b0b0b0", opacity=0.6),
                     hovertemplate="maintenance<br>%{base} → %{x}<extra></extra>", showlegend=False))
        fig.data.insert(0, fig.data.pop())
    window_start, window_end = (now - WINDOWS[window]).astimezone(tz), now.astimezone(tz)
    fig.layout_fig.update_layout(
        height=80 + 50 * df["agent_id"].nunique(),
        margin=dict(l=0, r=0, t=10, b=0),
        xaxis=dict(type="date", range=[window_start.replace(tzinfo=None).isoformat(),
                                       window_end.replace(tzinfo=None).isoformat()]),
        yaxis=dict(type="category", autorange="reversed"),
        yaxis_title=None,
        xaxis_title=None,
        barmode="overlay",
    )
    st.plotly_chart(fig.to_dict(), width="stretch", key=Keys.timeline(window), theme="streamlit")
    st.caption("Green: unbroken runs of heartbeats. Gaps: no beat by the next expected beat + grace of the agent's "
               "schedule (60 s without one), counted as down. Grey: maintenance windows.")
