"""Metrics Dashboard: scope widgets, cached loaders, KPIs, Plotly charts, details and comparison.

Everything the page shows comes from lib.analytics.reports (validated, flattened reports). Text from the
reports (captions, insights, periods, account names) is untrusted: it goes into dataframes, or
into Markdown/Plotly only after escaping.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import streamlit as st
from plotly.subplots import make_subplots

from lib.analytics import anomalies, catalogue
from lib.analytics import posts as lp
from lib.analytics import reports as an
from lib.core.export import frame_export
from lib.core.timeutil import utcnow
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.charts import Fig, plain
from lib.ui.export import export_control
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine, lazy_expander
from lib.ui.text import md_escape

RANGE_PRESETS = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365, "All": None, "Custom": -1}
DEFAULT_RANGE = "90 days"
RANGE_LABELS = {"7 days": "7d", "30 days": "30d", "90 days": "90d", "1 year": "1y"}  # short: the accounts need the room
CHART_ALL_UP_TO = 3  # up to this many accounts the Instagram chart starts with DEFAULT_IG; more: Reach alone
EXPORT_CAP = 100_000
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
TREND_COLORS = {"up": "#2e9d5b", "down": "#d64541", "flat": "#8a8f98"}
IG_METRICS = {  # instagram_metrics chart: label -> (column, axis)
    m.label: (m.column, "rate" if m.kind == "rate" else "count")
    for m in map(catalogue.metric, (
        "instagram_metrics.reach", "instagram_metrics.impressions", "instagram_metrics.profile_views",
        "instagram_metrics.website_clicks", "instagram_metrics.follower_growth", "instagram_metrics.followers_count",
        "instagram_metrics.posts_published", "instagram_metrics.avg_engagement_rate"))
}
DEFAULT_IG = ["Reach", "Impressions"]  # counts of one scale: one y axis until the user asks for more
ENGAGEMENT = catalogue.by_label(["instagram_metrics.total_likes", "instagram_metrics.total_comments",
                                 "instagram_metrics.total_saves", "instagram_metrics.total_shares"])
REVENUE = catalogue.by_label(["revenue_metrics.attributed_revenue", "revenue_metrics.attributed_orders",
                              "revenue_metrics.avg_order_value", "revenue_metrics.conversion_rate"])
MEDIA = catalogue.by_label(["media_metrics.avg_likes", "media_metrics.avg_comments", "media_metrics.avg_reach",
                            "instagram_metrics.posts_published"])
MEDIA_TYPE_FIELDS = {"count": "Posts", "avg_engagement_rate": "Avg engagement rate (%)", "avg_likes": "Avg likes",
                     "avg_comments": "Avg comments", "avg_reach": "Avg reach"}
CHART_TABS = ("Instagram metrics", "Engagement", "Media", "By media type", "Revenue", "Anomalies")
ANOMALY_COLOR = "#d62728"
IG_TO_ANOMALY = {label: col for label, (col, _) in IG_METRICS.items() if col in anomalies.METRICS}


class Keys:
    """The page's session-state and element keys (tests use these names too)."""
    TYPE, RANGE, CUSTOM_RANGE = "metrics_type", "metrics_range", "metrics_custom_range"  # type and range: in the URL
    CHART_TAB = "metrics_chart_tab"  # the open chart tab (lazy tabs: only that one is computed)
    IG_CHOICE, MEDIA_FIELD = "metrics_ig_choice", "metrics_media_field"  # the metrics / measure plotted
    IG_RIGHT_AXIS = "metrics_ig_right_axis"  # rates on a right axis of the same panel (else a panel of their own)
    DETAIL_PERIOD, DETAIL_ACCOUNT = "metrics_detail_period", "metrics_detail_account"  # the details shown
    COMPARISON = "metrics_comparison"  # the period comparison table
    DETAILS, COMPARE = "metrics_details_open", "metrics_compare_open"  # the lazy sections: True while open
    MORE_KPIS = "metrics_more_kpis_open"  # the lazy KPI cards when several accounts are in scope
    KPI_BOARD = "metrics_kpi_board"  # the KPI board (a row per account) shown instead of their cards
    BEST_WORST = "metrics_best_worst"  # the best and worst posts of each account's latest report
    ANOMALY_FLAGS, REPORT_ANOMALIES = "metrics_anomaly_flags", "metrics_report_anomalies"  # the Anomalies tab's tables
    RAISE_ANOMALIES = "metrics_raise_anomalies"  # the "raise the flags as alerts" button
    CSV_REPORTS, CSV_COMPARISON, CSV_FLAGS = "csv_reports", "csv_comparison", "csv_anomaly_flags"  # export controls
    CHART_IG, CHART_ENGAGEMENT, CHART_MEDIA, CHART_MEDIA_TYPE = "chart_ig", "chart_engagement", "chart_media", "chart_media_type"
    CHART_REVENUE, CHART_CHANGES = "chart_revenue", "chart_changes"
    FLASH = "metrics"  # lib.ui.feedback's flash messages of this page

    @staticmethod
    def accounts(sidebar_account) -> str:  # the account picker: a fresh one when the sidebar's account changes
        return f"metrics_accounts_{sidebar_account or 'all'}"

    @staticmethod
    def comparison_period(which: str, report_type: str) -> str:  # which: "a" or "b"
        return f"metrics_cmp_{which}_{report_type}"

    @staticmethod
    def chart_csv(chart: str) -> str:  # a chart's "Chart data" export
        return f"csv_{chart}"

    @staticmethod
    def kpis(account_id: str) -> str:  # an account's KPI card
        return f"kpis-{account_id}"

    @staticmethod
    def insights(kind: str, report_id: str) -> str:  # a report's box of key_findings / recommendations / anomalies
        return f"insights-{kind}-{report_id}"

    @staticmethod
    def posts(which: str, report_id: str) -> str:  # which: "top" or "best_worst"
        return f"{which}-{report_id}"


# --------------------------------------------------------------------------- scope

@dataclass(frozen=True)
class MetricsScope:
    account_ids: tuple[str, ...] | None  # None = every account (also reports of unknown accounts)
    report_type: str
    first: date | None  # None = from the first report
    last: date

    @property
    def label(self) -> str:
        start = "the first report" if self.first is None else self.first.isoformat()
        return f"{start} to {self.last.isoformat()}"


def scope_controls(scope: Scope) -> MetricsScope | None:
    """Accounts (several side by side), report type, date range with presets. None = nothing chosen."""
    today = utcnow().date()  # report periods are UTC days
    # at 1440 px three accounts' chips fit beside the two controls (the range's buttons are short)
    a, b, c = st.columns([4.2, 1.3, 3.0], vertical_alignment="bottom")
    options = [str(acc.id) for acc in scope.accounts]
    account_ids: tuple[str, ...] | None = None
    if options:
        default = [str(scope.account_id)] if scope.account_id is not None and str(scope.account_id) in options else options
        names = {str(acc.id): acc.username for acc in scope.accounts}
        chosen = a.multiselect(
            "Accounts", options, default=default, format_func=lambda v: names.get(v, v),
            key=Keys.accounts(scope.account_id),  # follows the sidebar's account
            help="Several accounts are shown side by side. Defaults to the sidebar's account.",
            placeholder="Pick one or more accounts",
        )
        if not chosen:
            st.info("Pick one or more accounts to see their reports.", icon=":material/person_search:")
            return None
        account_ids = None if len(chosen) == len(options) else tuple(chosen)
    else:
        a.caption("No business accounts are registered; showing every report.")
    report_type = b.segmented_control("Report type", an.REPORT_TYPES, default="weekly", key=Keys.TYPE,
                                      format_func=str.capitalize, bind="query-params") or "weekly"
    preset = c.segmented_control("Date range", list(RANGE_PRESETS), default=DEFAULT_RANGE, key=Keys.RANGE,
                                 format_func=lambda p: RANGE_LABELS.get(p, p), bind="query-params",
                                 help="The last 7, 30 or 90 days or year of reports (report dates, UTC), all, or "
                                      "a custom range.") or DEFAULT_RANGE
    days = RANGE_PRESETS[preset]
    if days == -1:
        picked = st.date_input("Custom range", value=(today - timedelta(days=90), today), max_value=today,
                               key=Keys.CUSTOM_RANGE)
        if not isinstance(picked, (tuple, list)) or len(picked) != 2:
            st.info("Pick the end date of the range.", icon=":material/date_range:")
            return None
        first, last = picked
    elif days is None:
        first, last = None, today
    else:
        first, last = today - timedelta(days=days - 1), today
    return MetricsScope(account_ids, report_type, first, last)


# --------------------------------------------------------------------------- loaders

@dataclass
class ReportSet:
    frame: pd.DataFrame  # flattened reports in range, by account and report date
    before: pd.DataFrame  # per account the report just before the range (delta base)
    problems: an.ProblemSummary


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_report_set(db_url: str, account_ids: tuple[str, ...] | None, report_type: str, first: date | None,
                    last: date) -> ReportSet:
    start, end = an.day_bounds(first or date(1970, 1, 1), last)
    with get_engine(db_url).connect() as conn:
        reports = an.load_reports(conn, account_ids=account_ids, report_type=report_type,
                                  start=None if first is None else start, end=end, full=False)
        before = [] if first is None else [an.parse_report(r, full=False) for r in an.fetch_previous_reports(
            conn, account_ids=account_ids, report_type=report_type, before=start, sections=an.CHART_SECTIONS)]
    return ReportSet(an.reports_frame(reports, lists=False), an.reports_frame(before, lists=False),
                     an.summarize_problems(reports))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_details(db_url: str, report_ids: tuple[str, ...]) -> list[an.Report]:
    """Full reports (insights included) for the selected period, one per account."""
    with get_engine(db_url).connect() as conn:
        return [an.parse_report(r) for r in an.fetch_reports_by_id(conn, report_ids)]


def build_reports_csv(db_url: str, ms: MetricsScope, names: dict[str, str], fmt: str = "csv") -> bytes:
    """The reports in scope, flattened (dotted columns), built when the button is clicked."""
    start, end = an.day_bounds(ms.first or date(1970, 1, 1), ms.last)
    with get_engine(db_url).connect() as conn:
        rows = an.fetch_reports(conn, account_ids=ms.account_ids, report_type=ms.report_type,
                                start=None if ms.first is None else start, end=end, limit=EXPORT_CAP)
    df = an.csv_columns(an.reports_frame([an.parse_report(r) for r in rows]))
    df.insert(2, "account", df["business_account_id"].map(lambda v: names.get(str(v), v)))
    return frame_export(df, fmt)


# --------------------------------------------------------------------------- text helpers

def _label(metric) -> str:
    """'avg_engagement_rate' -> 'avg engagement rate' (escaped for Plotly)."""
    return plain(str(metric).replace("_", " "))


def _day_text(value) -> str:
    return "unknown period" if value is None or pd.isna(value) else str(value.date())


def _report_period(start, end, day) -> str:
    """A report's period as text: its start-end range, else the day it is for."""
    return an.period_text(start, end) or _day_text(day)


def _period_of(report: dict) -> str:
    """A flattened report's period as text (start – end, else its day)."""
    return _report_period(report.get("start_date"), report.get("end_date"), report.get("report_date"))


def _account_names(scope: Scope, df: pd.DataFrame) -> dict[str, str]:
    return {str(a): scope.account_name(a) for a in df["business_account_id"].dropna().unique()}


def ordered_accounts(df: pd.DataFrame, names: dict[str, str]) -> list[str]:
    return sorted(df["business_account_id"].dropna().unique(), key=lambda a: (names.get(a, a).lower(), a))


# --------------------------------------------------------------------------- header, KPIs

def show_summary(data: ReportSet, ms: MetricsScope, scope: Scope) -> None:
    df = data.frame
    names = _account_names(scope, df)
    left, right = st.columns([2, 1], vertical_alignment="center")  # room for the format and its button
    n_acc = df["business_account_id"].nunique()
    left.caption(f"{len(df):,} {ms.report_type} reports · {n_acc} account{'s' if n_acc != 1 else ''} · "
                 f"{ms.label} (report dates, UTC)")
    with right:
        all_names = {str(a.id): a.username for a in scope.accounts} | names
        export_control("Reports", lambda fmt: build_reports_csv(scope.db_url, ms, all_names, fmt),
                       file_stem=f"analytics_reports_{ms.report_type}_{ms.last.isoformat()}", key=Keys.CSV_REPORTS,
                     help="One row per report, flattened: instagram_metrics.reach, revenue_metrics.conversion_rate, …")
    note = data.problems.note
    if note:
        st.warning(md_escape(note), icon=":material/report:")
        with st.expander("Which reports and values"):
            st.dataframe(pd.DataFrame(data.problems.examples), hide_index=True, width="stretch")


def show_empty(ms: MetricsScope) -> None:
    other = "weekly" if ms.report_type == "daily" else "daily"
    st.info(
        f"No {ms.report_type} reports from {ms.label}. The analytics scheduler writes analytics_reports "
        f"(daily at 02:00 UTC, weekly on Mondays at 08:00 UTC). Try a longer date range, the {other} reports, "
        "or other accounts.",
        icon=":material/query_stats:",
    )


def latest_ids(df: pd.DataFrame) -> tuple[str, ...]:
    """The newest report of each account in the frame (ordered by account and report date)."""
    return tuple(df.groupby("business_account_id", sort=True)["id"].last())


def show_kpis(data: ReportSet, scope: Scope) -> None:
    """One account: its eight KPI cards. Several: one board, a row per account, and their cards in a
    lazy expander. The board is a Markdown table: cards (24 for three accounts) or a dataframe
    (whose grid code is loaded for it) cost the page a sixth of its time in the browser, and a
    board compares accounts at a glance."""
    df = data.frame
    names = _account_names(scope, df)
    full = {r.business_account_id: an.flatten_report(r, lists=False) for r in load_details(scope.db_url, latest_ids(df))}
    accounts = ordered_accounts(df, names)
    kpis = {acc: _account_kpis(data, acc, full) for acc in accounts}
    sources = {k.source or "none" for _, _, ks in kpis.values() for k in ks}
    if len(accounts) == 1:
        _kpi_cards(accounts[0], *kpis[accounts[0]], names)
        _sources_caption(sources)
        return
    _kpi_board(accounts, kpis, names)
    st.caption("Changes in % against each report’s own historical_comparison, else the account’s previous "
               "report; the cards say which, with the absolute change.")
    cards = lazy_expander(f"KPI cards of the {len(accounts)} accounts", key=Keys.MORE_KPIS, icon=":material/view_module:")
    if cards is not None:
        with cards:
            for acc in accounts:
                _kpi_cards(acc, *kpis[acc], names)
            _sources_caption(sources)


def _sources_caption(sources: set[str]) -> None:
    """Where the cards' deltas come from (an.FROM_COMPARISON, an.FROM_PREVIOUS, "none")."""
    parts = []
    if an.FROM_COMPARISON in sources:
        parts.append("“vs …” deltas are the report’s own historical_comparison")
    if an.FROM_PREVIOUS in sources:
        parts.append("“vs previous report” deltas are computed against the account’s previous report")
    if "none" in sources:
        parts.append("no delta: neither is available")
    st.caption("; ".join(parts) + ".")


def _account_kpis(data: ReportSet, acc: str, full: dict[str, dict]) -> tuple[dict, dict | None, list[an.Kpi]]:
    """An account's latest report (with historical_comparison.changes), the one before it (also from
    before the range), and its KPIs."""
    latest, previous = an.latest_and_previous(data.frame, acc)
    latest = full.get(acc, latest)
    if previous is None and not data.before.empty:
        prior = data.before[data.before["business_account_id"] == acc]
        previous = prior.iloc[-1].to_dict() if not prior.empty else None
    return latest, previous, an.kpi_deltas(latest, previous)


def _kpi_board(accounts: list[str], kpis: dict, names: dict[str, str]) -> None:
    rows = [(names.get(acc, acc), _period_of(kpis[acc][0]), kpis[acc][2]) for acc in accounts]
    periods = sorted({period for _, period, _ in rows})
    report_type = next((kpis[acc][0].get("report_type") for acc in accounts if kpis[acc][0].get("report_type")), "")
    with st.container(key=Keys.KPI_BOARD):
        if len(periods) == 1:  # the usual case: said once above the board, not in every row
            kind = f"{md_escape(report_type)} " if report_type else ""
            st.caption(f"Latest {kind}report of each account: {md_escape(periods[0])}")
        st.markdown(an.kpi_board(rows, with_period=len(periods) > 1))


def _kpi_cards(acc: str, latest: dict, previous: dict | None, kpis: list[an.Kpi], names: dict[str, str]) -> None:
    """One account's box of eight cards."""
    with st.container(border=True, key=Keys.kpis(acc)):
        before = _previous_text(kpis, previous)
        st.markdown(f"**{md_escape(names.get(acc, acc))}** · latest {latest.get('report_type') or ''} report: "
                    f"{md_escape(_period_of(latest))}" + (f" · previous report: {before}" if before else ""))
        cols = st.columns(4) + st.columns(4)
        for col, k in zip(cols, kpis):
            delta = an.fmt_delta(k)
            if k.delta == 0:
                delta = 0
            desc = None
            if k.source == an.FROM_COMPARISON:
                desc = "vs " + _comparison_label(latest)
            elif k.source == an.FROM_PREVIOUS:
                desc = "vs previous report"
            # no help icon per card: each is a popover of its own (24 on three accounts, a fifth of the
            # page's drawing); the delta's source is its description, the caption below says the rest
            col.metric(k.label, an.fmt_value(k.value, k.kind), delta, delta_description=desc,
                       delta_color="normal")


def _comparison_label(row: dict) -> str:
    period = row.get("historical_comparison.period")
    if isinstance(period, str) and period.strip():
        return md_escape(period.strip().replace("vs_", "").replace("_", " "))
    return "previous period"


def _previous_text(kpis: list[an.Kpi], previous: dict | None) -> str:
    """The previous report's period, when a delta of this account's cards was computed against it."""
    if previous is None or not any(k.source == an.FROM_PREVIOUS for k in kpis):
        return ""
    return md_escape(_period_of(previous))


# --------------------------------------------------------------------------- best and worst posts

BEST_WORST_CONFIG = {
    "account": st.column_config.TextColumn("Account"),
    "rank": st.column_config.TextColumn("Post"),
    "media_id": st.column_config.TextColumn("Media id"),
    "media_type": st.column_config.TextColumn("Type"),
    "caption": st.column_config.TextColumn("Caption", width="large"),
    "engagement": st.column_config.NumberColumn("Engagement", format="localized",
                                                help="Likes, comments, saves and shares"),
    "likes": st.column_config.NumberColumn("Likes", format="localized"),
    "comments": st.column_config.NumberColumn("Comments", format="localized"),
    "reach": st.column_config.NumberColumn("Reach", format="localized"),
}


def best_worst_frame(reports: list[an.Report], names: dict[str, str]) -> pd.DataFrame:
    """The best and worst posts of the reports, a row each, ordered by account name (with an Account
    column when there are several accounts)."""
    reports = sorted(reports, key=lambda r: (names.get(r.business_account_id, r.business_account_id).lower(), r.id))
    frames = []
    for r in reports:
        table = lp.best_and_worst(r.sections.get("media_metrics"))
        table.insert(0, "account", names.get(r.business_account_id, r.business_account_id))
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["account", *lp.BEST_WORST_COLUMNS])
    out = pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)
    return out if len(reports) > 1 else out.drop(columns=["account"])


def show_best_worst(data: ReportSet, scope: Scope, ms: MetricsScope) -> None:
    """The latest report's best and worst post of each account, one compact table."""
    df = data.frame
    names = _account_names(scope, df)
    reports = load_details(scope.db_url, latest_ids(df))
    table = best_worst_frame(reports, names)
    periods = sorted({r.period for r in reports})
    st.caption(f"From the latest {ms.report_type} report of each account"
               + (f": {md_escape(periods[0])}" if len(periods) == 1 else "") + ". Engagement counts likes, comments, "
               "saves and shares.")
    if table.empty:
        st.caption("These reports name no best or worst post.")
        return
    with st.container(key=Keys.BEST_WORST):
        # a Markdown table: a few rows need no sorting, and a dataframe's grid was a tenth of the page's
        # time in the browser. The media id is for the details below: here the caption names the post.
        st.markdown(lp.best_worst_markdown(table))


# --------------------------------------------------------------------------- charts

def _with_names(long: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    long = long.copy()
    long["account"] = long["business_account_id"].map(lambda a: names.get(a, a))
    return long


def _series_traces(fig: Fig, long: pd.DataFrame, metrics: dict[str, str], accounts: list[str], names: dict[str, str],
                   *, kind: str = "line", secondary: bool | None = None, row: int | None = None, col: int | None = None,
                   color_by: str = "metric", hover_fmt: str = ",.2f", color_offset: int = 0) -> None:
    """One trace per (account, metric). Colour by metric (dash by account) or by account."""
    several = len(accounts) > 1
    wanted = {c.rsplit(".", 1)[-1] for c in metrics.values()}
    parts = dict(tuple(long[long["metric"].isin(wanted)].groupby(["metric", "business_account_id"], sort=False)))
    for i, (label, col_name) in enumerate(metrics.items()):
        metric = col_name.rsplit(".", 1)[-1]
        for j, acc in enumerate(accounts):
            part = parts.get((metric, acc))
            if part is None or part.empty:
                continue
            acc_name = plain(names.get(acc, acc))
            name = f"{label} · {acc_name}" if several and color_by == "metric" else (acc_name if color_by == "account" else label)
            color = PALETTE[(color_offset + (i if color_by == "metric" else j)) % len(PALETTE)]
            # naive UTC datetime64: Plotly serialises it ~15x faster than tz-aware Timestamp objects
            x = part["report_date"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
            trace = dict(x=x, y=part["value"].to_numpy(), name=name, legendgroup=name,
                         customdata=part["period"].map(plain).to_numpy(),
                         hovertemplate=f"<b>{name}</b><br>%{{customdata}}<br>%{{y:{hover_fmt}}}<extra></extra>")
            if kind == "bar":
                trace.update(type="bar", marker=dict(color=color))
            else:
                dash = DASHES[j % len(DASHES)] if color_by == "metric" else "solid"
                # markers only for one account's lines (several accounts' markers were a tenth of the
                # page's browser time) and for a line of up to 3 points, which is hard to see without them
                markers = len(part) <= 3 or (not several and len(part) <= 60)
                trace.update(type="scatter", mode="lines+markers" if markers else "lines",
                             line=dict(color=color, dash=dash, width=2), marker=dict(size=5))
            fig.add(trace, row=row, col=col, secondary_y=secondary)


def _layout(fig: Fig, height: int = 420, **kwargs) -> None:
    fig.layout_fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), hovermode="closest",
                                 legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), **kwargs)


def _one_legend_entry_per_name(fig: Fig, show: bool = True) -> None:
    seen = set()
    for t in fig.data:
        t["showlegend"] = show and t["name"] not in seen
        seen.add(t["name"])


def _chart(fig: Fig, key: str, data: pd.DataFrame, file_name: str) -> None:
    st.plotly_chart(fig.to_dict(), theme="streamlit", width="stretch", key=key, config={"displaylogo": False})
    data = data.drop(columns=[c for c in ("business_account_id",) if c in data and "account" in data])
    export_control("Chart data", lambda fmt: frame_export(data, fmt), file_stem=file_name.removesuffix(".csv"),
                   key=Keys.chart_csv(key))


def show_charts(data: ReportSet, scope: Scope, ms: MetricsScope) -> None:
    df = data.frame
    names = _account_names(scope, df)
    accounts = ordered_accounts(df, names)
    tabs = st.tabs(list(CHART_TABS), key=Keys.CHART_TAB, on_change="rerun")
    threshold = scope.settings.anomaly_threshold

    def ig(df, accounts, names, ms):
        flags = None
        if ms.report_type == "daily":  # flags are on daily reports: markers on the daily chart
            flags = load_flags(scope.db_url, ms.account_ids, ms.first or df["report_date"].min().date(), ms.last,
                               threshold)
        _ig_chart(df, accounts, names, ms, flags)

    def anomaly_tab(df, accounts, names, ms):
        show_anomalies(scope, ms, names, threshold)

    renderers = (ig, _engagement_chart, _media_chart, _media_type_chart, _revenue_chart, anomaly_tab)
    for tab, render in zip(tabs, renderers):
        if tab.open is False:  # lazy tabs: only the open one is computed and sent
            continue
        with tab:
            render(df, accounts, names, ms)


def default_ig_metrics(n_accounts: int) -> list[str]:
    """The metrics chosen at first: one line per account and metric, so with more accounts than
    CHART_ALL_UP_TO only Reach (ten accounts drew 30 lines, measured the slowest part of the page)."""
    return DEFAULT_IG if n_accounts <= CHART_ALL_UP_TO else DEFAULT_IG[:1]


def _ig_chart(df, accounts, names, ms, flags: pd.DataFrame | None = None):
    reach_only = len(accounts) > CHART_ALL_UP_TO
    chosen = st.multiselect("Metrics", list(IG_METRICS), default=default_ig_metrics(len(accounts)),
                            key=Keys.IG_CHOICE,
                            help="Counts share one axis. A rate (%) gets a panel of its own below, or the right "
                                 "axis when you turn that on."
                                 + (f" With more than {CHART_ALL_UP_TO} accounts in scope only Reach is chosen at "
                                    "first (one line per account and metric); add others here." if reach_only else ""))
    if not chosen:
        st.info("Choose one or more metrics to plot.")
        return
    metrics = {m: IG_METRICS[m][0] for m in chosen}
    counts = {m: c for m, c in metrics.items() if IG_METRICS[m][1] == "count"}
    rates = {m: c for m, c in metrics.items() if IG_METRICS[m][1] == "rate"}
    right_axis = bool(counts and rates) and st.toggle(
        "Rates on a right axis", key=Keys.IG_RIGHT_AXIS,
        help="Off: the rates get a panel of their own below the counts, each panel with one y axis.")
    long = an.long_series(df, list(metrics.values()))
    if long.empty:
        st.info("The reports in scope have none of these metrics.")
        return
    layout = ig_layout(bool(counts), bool(rates), right_axis)
    fig = Fig(make_subplots(rows=layout.rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                            row_heights=[0.65, 0.35] if layout.rows == 2 else None,
                            specs=[[{"secondary_y": layout.right_axis}]] * layout.rows))
    _series_traces(fig, long, counts, accounts, names, hover_fmt=",.0f", row=1, col=1)
    _series_traces(fig, long, rates, accounts, names, secondary=layout.right_axis, hover_fmt=".2f",
                   color_offset=len(counts), row=layout.rate_row, col=1)
    if flags is not None and not flags.empty:
        _anomaly_markers(fig, flags, chosen, names, several=len(accounts) > 1, layout=layout)
    _layout(fig, height=420 if layout.rows == 1 else 520)
    if counts:
        fig.layout_fig.update_yaxes(title_text="count", rangemode="tozero", row=1, col=1, secondary_y=False)
    if rates:
        fig.layout_fig.update_yaxes(title_text="rate (%)", rangemode="tozero", row=layout.rate_row, col=1,
                                    secondary_y=layout.right_axis, showgrid=not layout.right_axis)
    _chart(fig, Keys.CHART_IG, _with_names(long, names), f"instagram_metrics_{ms.report_type}.csv")


@dataclass(frozen=True)
class IgLayout:
    rows: int  # panels, one above the other
    rate_row: int  # the panel of the rates
    right_axis: bool  # the rates on a right axis of the counts' panel


def ig_layout(has_counts: bool, has_rates: bool, right_axis: bool) -> IgLayout:
    """Counts and rates differ by orders of magnitude: together they get two panels (one y axis
    each) unless the user asked for the rates on a right axis; either alone, one panel, one axis."""
    if has_counts and has_rates:
        return IgLayout(1, 1, True) if right_axis else IgLayout(2, 2, False)
    return IgLayout(1, 1, False)


def _anomaly_markers(fig: Fig, flags: pd.DataFrame, chosen: list[str], names: dict[str, str], several: bool,
                     layout: IgLayout) -> None:
    """One marker trace per shown metric: the flagged days (red x), hover with the deviation."""
    shown = False
    for label in chosen:
        col = IG_TO_ANOMALY.get(label)
        if col is None:
            continue
        part = flags[flags["metric"] == anomalies.METRICS[col][1]]
        if part.empty:
            continue
        rate = IG_METRICS[label][1] == "rate"
        text = [f"{plain(names.get(a, a)) + ' · ' if several else ''}{plain(label)}: {v:,.6g}<br>"
                f"28-day median {b:,.6g} · deviation {d:+.1f}"
                for a, v, b, d in zip(part["business_account_id"], part["value"], part["baseline"], part["deviation"])]
        fig.add(dict(type="scatter", mode="markers", name="Anomaly", legendgroup="anomaly", showlegend=not shown,
                     x=part["report_date"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(),
                     y=part["value"].to_numpy(), text=text, hovertemplate="%{text}<extra>anomaly</extra>",
                     marker=dict(symbol="x", size=11, color=ANOMALY_COLOR, line=dict(width=1))),
                row=layout.rate_row if rate else 1, col=1, secondary_y=rate and layout.right_axis)
        shown = True


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_flags(db_url: str, account_ids: tuple[str, ...] | None, first: date, last: date,
               threshold: float) -> pd.DataFrame:
    with get_engine(db_url).connect() as conn:
        return anomalies.load_flags(conn, account_ids=account_ids, first=first, last=last, threshold=threshold)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_report_anomalies(db_url: str, account_ids: tuple[str, ...] | None, first: date, last: date) -> pd.DataFrame:
    """The reports' own insights.anomalies (daily reports of the range), newest first."""
    start, end = an.day_bounds(first, last)
    with get_engine(db_url).connect() as conn:
        rows = an.fetch_reports(conn, account_ids=account_ids, report_type="daily", start=start, end=end,
                                sections=("insights",))
    out = []
    for r in rows:
        rep = an.parse_report(r)
        for item in (rep.sections.get("insights") or {}).get("anomalies") or []:
            out.append({"business_account_id": rep.business_account_id, "report_date": rep.report_date,
                        "anomaly": str(item)})
    df = pd.DataFrame(out, columns=["business_account_id", "report_date", "anomaly"])
    return df.iloc[::-1].reset_index(drop=True)


def show_anomalies(scope: Scope, ms: MetricsScope, names: dict[str, str], threshold: float) -> None:
    first = ms.first or (ms.last - timedelta(days=365))
    flags = load_flags(scope.db_url, ms.account_ids, first, ms.last, threshold)
    theirs = load_report_anomalies(scope.db_url, ms.account_ids, first, ms.last)
    st.caption(f"Daily reports, {first} to {ms.last}: a day is flagged when a metric lies more than {threshold:g} "
               "robust deviations (median and MAD of the previous 28 days) from its baseline "
               "(setting ANOMALY_THRESHOLD)." + ("" if ms.first else " “All” shows the last year."))
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown(f"**Flags** ({len(flags):,})")
        if flags.empty:
            st.caption("No day beyond the threshold.")
        else:
            table = flags.assign(account=flags["business_account_id"].map(lambda a: names.get(a, a)))
            table = table[["day", "account", "label", "value", "baseline", "deviation", "change_pct", "direction"]]
            st.dataframe(table, hide_index=True, width="stretch", key=Keys.ANOMALY_FLAGS, column_config={
                "day": st.column_config.DateColumn("Day (UTC)"),
                "label": st.column_config.TextColumn("Metric"),
                "value": st.column_config.NumberColumn("Value", format="localized"),
                "baseline": st.column_config.NumberColumn("28-day median", format="localized"),
                "deviation": st.column_config.NumberColumn("Deviation", format="%+.1f",
                                                           help="(value - median) / (1.4826 × MAD)"),
                "change_pct": st.column_config.NumberColumn("vs median %", format="%+.1f %%"),
            })
            export_control("Flags", lambda fmt: frame_export(table, fmt), file_stem=f"anomaly_flags_{ms.last}",
                           key=Keys.CSV_FLAGS)
            if scope.settings.anomaly_alerts_on:
                _raise_button(scope, flags, names)
    with right:
        st.markdown(f"**The reports' own anomalies** ({len(theirs):,})")
        if theirs.empty:
            st.caption("No insights.anomalies in these reports.")
        else:
            shown = theirs.assign(account=theirs["business_account_id"].map(lambda a: names.get(a, a)))
            st.dataframe(shown[["report_date", "account", "anomaly"]], hide_index=True, width="stretch",
                         key=Keys.REPORT_ANOMALIES, column_config={
                             "report_date": st.column_config.DatetimeColumn("Report", timezone=str(scope.tz),
                                                                            format="YYYY-MM-DD"),
                             "anomaly": st.column_config.TextColumn("insights.anomalies", width="large")})


def _raise_alerts(db_url: str, flags: pd.DataFrame, names: dict[str, str], settings) -> None:
    ids = guarded_write(Keys.FLASH, "Raise alerts", get_engine(db_url), lambda conn: anomalies.raise_anomaly_alerts(
        conn, flags, actor=current_actor(settings), now=utcnow(), names=names))
    if ids is not None:
        flash(Keys.FLASH, "success", f"Raised or updated {len(ids)} metric_anomaly alert{'s' if len(ids) != 1 else ''}.")


def _raise_button(scope: Scope, flags: pd.DataFrame, names: dict[str, str]) -> None:
    show_flash(Keys.FLASH)
    newest = flags["day"].max().date()
    st.button(f"Raise the flags of {newest} as alerts", key=Keys.RAISE_ANOMALIES, icon=":material/campaign:",
              disabled=not scope.user.is_operator, on_click=_raise_alerts,
              args=(scope.db_url, flags, names, scope.settings),
              help="Operators only: one metric_anomaly alert per account (ANOMALY_ALERTS is on)."
              if scope.user.is_operator else OPERATORS_ONLY)


def _engagement_chart(df, accounts, names, ms):
    long = an.long_series(df, list(ENGAGEMENT.values()))
    if long.empty:
        st.info("The reports in scope have no likes, comments, saves or shares.")
        return
    n = len(accounts)
    fig = Fig(make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.3 / n,
                            subplot_titles=[plain(names.get(a, a)) for a in accounts] if n > 1 else None))
    for r, acc in enumerate(accounts, start=1):
        _series_traces(fig, long, ENGAGEMENT, [acc], names, kind="bar", row=r, col=1, hover_fmt=",.0f")
    _one_legend_entry_per_name(fig)  # one entry per metric, not per account
    _layout(fig, height=max(380, 160 * n), barmode="stack")
    if n > 1:  # keep the legend clear of the first panel's title
        fig.layout_fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.06, x=0), margin=dict(t=40))
    _chart(fig, Keys.CHART_ENGAGEMENT, _with_names(long, names), f"engagement_{ms.report_type}.csv")


def _media_chart(df, accounts, names, ms):
    _small_multiples(df, accounts, names, MEDIA, Keys.CHART_MEDIA, f"media_metrics_{ms.report_type}.csv",
                     "The reports in scope have no media metrics.")


def _media_type_chart(df, accounts, names, ms):
    breakdown = an.media_type_breakdown(df)
    if breakdown.empty:
        st.info("The reports in scope have no by_media_type breakdown.")
        return
    fields = [f for f in MEDIA_TYPE_FIELDS if f in set(breakdown["field"])] + sorted(
        set(breakdown["field"]) - set(MEDIA_TYPE_FIELDS))
    field = st.segmented_control("Measure", fields, default=fields[0], key=Keys.MEDIA_FIELD,
                                 format_func=lambda f: MEDIA_TYPE_FIELDS.get(f, f)) or fields[0]
    part = breakdown[breakdown["field"] == field]
    fig = Fig()
    for j, acc in enumerate(accounts):
        rows = part[part["business_account_id"] == acc]
        if rows.empty:
            continue
        name = plain(names.get(acc, acc))
        fig.add(dict(type="bar", x=[plain(t) for t in rows["media_type"]], y=rows["value"].to_numpy(), name=name,
                     marker=dict(color=PALETTE[j % len(PALETTE)]),
                     hovertemplate=f"<b>{name}</b><br>%{{x}}: %{{y:,.2f}}<extra></extra>"))
    _layout(fig, height=380, barmode="group")
    fig.layout_fig.update_yaxes(title_text=MEDIA_TYPE_FIELDS.get(field, field))
    st.caption("Over all reports in scope: posts are summed, averages weighted by each report's post count.")
    _chart(fig, Keys.CHART_MEDIA_TYPE, _with_names(breakdown, names), f"by_media_type_{ms.report_type}.csv")


def _revenue_chart(df, accounts, names, ms):
    _small_multiples(df, accounts, names, REVENUE, Keys.CHART_REVENUE, f"revenue_metrics_{ms.report_type}.csv",
                     "The reports in scope have no revenue metrics.")


def _small_multiples(df, accounts, names, metrics: dict[str, str], key: str, file_name: str, empty: str) -> None:
    """Four panels, one per metric, one line per account (the same colour in every panel)."""
    long = an.long_series(df, list(metrics.values()))
    if long.empty:
        st.info(empty)
        return
    fig = Fig(make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.16, horizontal_spacing=0.08,
                            subplot_titles=list(metrics)))
    for i, (label, column) in enumerate(metrics.items()):
        rate = column.endswith("conversion_rate")
        fmt = ".2%" if rate else (",.2f" if "$" in label else ",.1f")
        _series_traces(fig, long, {label: column}, accounts, names, row=i // 2 + 1, col=i % 2 + 1,
                       color_by="account", hover_fmt=fmt, kind="bar" if column.endswith("posts_published") else "line")
        if rate:
            fig.layout_fig.update_yaxes(tickformat=".1%", row=i // 2 + 1, col=i % 2 + 1)
    _one_legend_entry_per_name(fig, show=len(accounts) > 1)
    _layout(fig, height=560, barmode="group")
    fig.layout_fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.12, x=0), margin=dict(t=40))
    _chart(fig, key, _with_names(long, names), file_name)


# --------------------------------------------------------------------------- report details

def period_choices(df: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Report periods in scope, newest first -> the ids of the reports of that period."""
    if df.empty:
        return {}
    periods = [_report_period(s, e, d) for s, e, d in zip(df["start_date"], df["end_date"], df["report_date"])]
    work = pd.DataFrame({"period": periods, "report_date": df["report_date"], "id": df["id"]})
    groups = work.groupby("period", sort=False).agg(report_date=("report_date", "max"), ids=("id", tuple))
    groups = groups.sort_values("report_date", ascending=False, kind="stable")
    return dict(zip(groups.index, groups["ids"]))


DETAILS_SIDE_BY_SIDE = 3  # more accounts than this: the details show one account, picked


def pick_details(df: pd.DataFrame, scope: Scope) -> tuple[str, ...]:
    """The ids of the reports whose details to show: one period (newest by default), and every
    account in scope, or one picked account when there are more than DETAILS_SIDE_BY_SIDE."""
    choices = period_choices(df)
    if not choices:
        return ()
    names = _account_names(scope, df)
    accounts = ordered_accounts(df, names)
    left, right = st.columns([2, 1]) if len(accounts) > DETAILS_SIDE_BY_SIDE else (st.container(), None)
    period = left.selectbox("Report period", list(choices), index=0, key=Keys.DETAIL_PERIOD,
                            help="Newest first. The insights, changes and posts below belong to this period.")
    ids = choices[period]
    if right is not None:
        account = right.selectbox("Account", accounts, format_func=lambda a: names.get(a, a),
                                  key=Keys.DETAIL_ACCOUNT)
        by_id = dict(zip(df["id"], df["business_account_id"]))
        ids = tuple(i for i in ids if by_id.get(i) == account)
        if not ids:
            st.info(f"{md_escape(names.get(account, account))} has no report for {md_escape(period)}.")
    return ids


def show_details(reports: list[an.Report], scope: Scope, report_type: str) -> None:
    names = {r.business_account_id: scope.account_name(r.business_account_id) for r in reports}
    reports = sorted(reports, key=lambda r: (names.get(r.business_account_id, "").lower(), r.id))
    several = len(reports) > 1
    left, right = st.columns([1, 1], gap="large")
    with left:
        st.markdown("**Insights**")
        for r in reports:
            show_insights(r, names.get(r.business_account_id) if several else None)
    with right:
        st.markdown("**Changes vs previous period** (historical_comparison)")
        show_changes(reports, names, report_type)
    st.markdown("**Posts**")
    for r in reports:
        show_posts(r, names.get(r.business_account_id) if several else None)


def show_insights(report: an.Report, account: str | None) -> None:
    insights = report.sections.get("insights") or {}
    head = f"{md_escape(account)} · " if account else ""
    st.caption(f"{head}{md_escape(report.report_type or '')} report {md_escape(report.period)}")
    if report.problems:
        st.caption(f":material/report: {len(report.problems)} unusable value{'s' if len(report.problems) != 1 else ''} "
                   f"skipped in this report: {md_escape('; '.join(report.problems[:5]))}")
    if not any(insights.get(k) for k in an.INSIGHT_KINDS):
        st.caption("This report has no insights.")
        return
    for kind, title, icon in (("key_findings", "Key findings", ":material/lightbulb:"),
                              ("recommendations", "Recommendations", ":material/recommend:"),
                              ("anomalies", "Anomalies", ":material/warning:")):
        items = insights.get(kind) or []
        if not items:
            continue
        with st.container(border=True, key=Keys.insights(kind, report.id)):
            st.markdown(f"{icon} **{title}**")
            st.markdown("\n".join(f"- {md_escape(item)}" for item in items))


def show_changes(reports: list[an.Report], names: dict, report_type: str) -> None:
    frames = []
    for r in reports:
        ch = an.changes_frame(r)
        if not ch.empty:
            ch.insert(0, "account", names.get(r.business_account_id, r.business_account_id))
            frames.append(ch)
    if not frames:
        st.caption("No historical_comparison.changes in this report.")
        return
    data = pd.concat(frames, ignore_index=True)
    accounts = list(dict.fromkeys(data["account"]))
    fig = Fig(make_subplots(rows=1, cols=len(accounts), shared_yaxes=True, horizontal_spacing=0.04,
                            subplot_titles=[plain(a) for a in accounts] if len(accounts) > 1 else None))
    shown = set()
    for c, acc in enumerate(accounts, start=1):
        part = data[data["account"] == acc]
        for trend, rows in part.groupby("trend", sort=False):
            fig.add(dict(
                type="bar", x=rows["change_pct"].to_numpy(), y=[_label(m) for m in rows["metric"]], orientation="h",
                marker=dict(color=TREND_COLORS.get(str(trend), "#8a8f98")), name=plain(trend),
                legendgroup=plain(trend), showlegend=trend not in shown,
                customdata=list(zip(rows["previous"], rows["current"])),
                hovertemplate="<b>%{y}</b><br>%{x:+.1f} %<br>previous %{customdata[0]:,.2f}"
                              " → current %{customdata[1]:,.2f}<extra></extra>",
            ), row=1, col=c)
            shown.add(trend)
    n_metrics = data["metric"].nunique()
    _layout(fig, height=max(280, 26 * n_metrics + 110))
    fig.layout_fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    fig.layout_fig.update_xaxes(title_text="change %", zeroline=True, zerolinewidth=2)
    fig.layout_fig.update_yaxes(categoryorder="array", categoryarray=list(dict.fromkeys(
        _label(m) for m in data.sort_values("change_pct")["metric"])))
    _chart(fig, Keys.CHART_CHANGES, data, f"historical_comparison_changes_{report_type}.csv")


def show_posts(report: an.Report, account: str | None) -> None:
    posts = an.posts_frame(report)
    best_worst = lp.best_and_worst(report.sections.get("media_metrics"))
    if account:
        st.caption(md_escape(account))
    if posts.empty and best_worst.empty:
        st.caption("This report lists no posts.")
        return
    a, b = st.columns([2, 3])
    with a:
        st.caption("Top performing")
        if posts.empty:
            st.caption("—")
        else:
            posts["caption_snippet"] = posts["caption_snippet"].map(lp.caption_text)
            st.dataframe(posts, hide_index=True, width="stretch", key=Keys.posts("top", report.id), column_config={
                "media_id": st.column_config.TextColumn("Media id"),
                "engagement": st.column_config.NumberColumn("Engagement", format="localized"),
                "caption_snippet": st.column_config.TextColumn("Caption", width="large"),
            })
    with b:
        st.caption("Best and worst")
        if best_worst.empty:
            st.caption("—")
        else:
            st.dataframe(best_worst, hide_index=True, width="stretch", key=Keys.posts("best_worst", report.id),
                         column_config=BEST_WORST_CONFIG)


# --------------------------------------------------------------------------- period comparison

def comparison_periods(ms: MetricsScope) -> tuple[tuple[date, date], tuple[date, date]] | None:
    span = 7 if ms.report_type == "daily" else 28
    b_default = (ms.last - timedelta(days=span - 1), ms.last)
    a_default = (b_default[0] - timedelta(days=span), b_default[0] - timedelta(days=1))
    c1, c2 = st.columns(2)
    a = c1.date_input("Period A", value=a_default, key=Keys.comparison_period("a", ms.report_type))
    b = c2.date_input("Period B", value=b_default, key=Keys.comparison_period("b", ms.report_type))
    if not (isinstance(a, (tuple, list)) and len(a) == 2 and isinstance(b, (tuple, list)) and len(b) == 2):
        st.info("Pick a start and an end date for both periods.", icon=":material/date_range:")
        return None
    return (a[0], a[1]), (b[0], b[1])


def show_comparison(data: ReportSet, periods, scope: Scope, ms: MetricsScope) -> None:
    (a, b) = periods
    table = an.compare_periods(data.frame, a, b)
    if table.empty or (table["reports_a"].max() == 0 and table["reports_b"].max() == 0):
        st.info(f"No {ms.report_type} reports lie within these periods.")
        return
    names = {acc: scope.account_name(acc) for acc in table["business_account_id"].unique()}
    table.insert(0, "account", table["business_account_id"].map(names))
    counts = table.groupby("account")[["reports_a", "reports_b"]].first()
    st.caption(f"A: {a[0]} – {a[1]} · B: {b[0]} – {b[1]}. Reports whose whole period lies inside: "
               + "; ".join(f"{md_escape(acc)} {int(r.reports_a)} vs {int(r.reports_b)}" for acc, r in counts.iterrows())
               + ". Flows are summed, rates and per-post averages averaged, followers taken at the end; where the "
               "periods hold different numbers of reports, a flow's Change % compares its average per report "
               "(see Basis).")
    shown = table.drop(columns=["business_account_id", "how", "reports_a", "reports_b"])
    if table["account"].nunique() == 1:
        shown = shown.drop(columns=["account"])
    st.dataframe(shown, hide_index=True, width="stretch", key=Keys.COMPARISON, column_config={
        "account": st.column_config.TextColumn("Account"),
        "metric": st.column_config.TextColumn("Metric"),
        "a": st.column_config.NumberColumn("Period A", format="localized"),
        "b": st.column_config.NumberColumn("Period B", format="localized"),
        "change": st.column_config.NumberColumn("Change", format="localized"),
        "change_pct": st.column_config.NumberColumn("Change %", format="%+.1f %%"),
        "basis": st.column_config.TextColumn("Basis", help="What Change % compares"),
    })
    out = table.drop(columns=["business_account_id"])
    export_control("Comparison", lambda fmt: frame_export(out, fmt), file_stem=f"period_comparison_{ms.report_type}",
                   key=Keys.CSV_COMPARISON)
