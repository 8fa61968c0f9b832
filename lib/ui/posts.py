"""Posts (Analyze): every post the queue published joined with what the reports say about it.

Captions come from queue payloads (untrusted): shown in a dataframe only.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import streamlit as st

from lib.analytics import posts as lp
from lib.core.export import build_export
from lib.core.timeutil import utcnow
from lib.ui.export import export_control
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine

RANGES = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365}
DEFAULT_RANGE = "30 days"
SORT_LABELS = {"engagement": "Engagement", "published": "Newest"}
EXPORT_CAP = 100_000
SHOWN_COLUMNS = [c for c in lp.COLUMNS if c not in ("business_account_id",)]


@dataclass(frozen=True)
class PostsControls:
    first: date
    last: date
    search: str | None
    sort: str
    reported_only: bool

    def filter(self, account_id: uuid.UUID | None) -> lp.PostsFilter:
        start = pd.Timestamp(self.first, tz="UTC").to_pydatetime()
        end = pd.Timestamp(self.last + timedelta(days=1), tz="UTC").to_pydatetime()
        return lp.PostsFilter(since=start, until=end, account_id=account_id, search=self.search,
                              reported_only=self.reported_only)


def controls() -> PostsControls:
    today = utcnow().date()
    a, b, c, d = st.columns([2.0, 2.6, 1.8, 1.3], vertical_alignment="bottom")  # no label cut at 1440 px
    search = a.text_input("Search captions", key="posts_search", max_chars=200, placeholder="e.g. espresso",
                          bind="query-params")
    preset = b.segmented_control("Published", list(RANGES), default=DEFAULT_RANGE, key="posts_range",
                                 bind="query-params") or DEFAULT_RANGE
    sort = c.segmented_control("Sort by", list(SORT_LABELS), default="engagement", format_func=SORT_LABELS.get,
                               key="posts_sort", bind="query-params") or "engagement"
    reported = d.toggle("Reported only", key="posts_reported", help="Posts that a report mentions")
    first = today - timedelta(days=RANGES[preset] - 1)
    return PostsControls(first, today, (search or "").strip() or None, sort, bool(reported))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_posts(db_url: str, filt: lp.PostsFilter, sort: str, names: tuple[tuple[str, str], ...]) -> lp.PostsView:
    with get_engine(db_url).connect() as conn:
        return lp.posts_view(conn, filt=filt, sort=sort, names=dict(names))


def account_names(scope: Scope) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(a.id), a.username) for a in scope.accounts))


def show_posts(view: lp.PostsView, scope: Scope, filt: lp.PostsFilter, sort: str, names) -> None:
    df = view.frame
    head, export = st.columns([3, 2], vertical_alignment="bottom")
    shown = len(df)
    head.caption(f"{view.total:,} published post{'s' if view.total != 1 else ''} in the range · "
                 f"{view.reported:,} with report data · {shown:,} shown"
                 + (f" (every reported one and the newest {lp.DEFAULT_LIMIT:,})" if shown < view.total else ""))
    db_url = scope.db_url

    def build(fmt: str) -> bytes:
        with get_engine(db_url).connect() as conn:
            return build_export(fmt, SHOWN_COLUMNS, _export_rows(conn, filt, sort, dict(names)), cap=EXPORT_CAP)[0]

    with export:
        export_control("Posts", build, file_stem=f"posts_{filt.since:%Y%m%d}_{filt.until:%Y%m%d}", key="posts_export",
                       help=f"Every published post of the range with its report data (up to {EXPORT_CAP:,}).")
    if df.empty:
        st.info("No published posts match. Posts appear here when the worker publishes publish_post or repost_ugc "
                "rows of the queue; widen the range or clear the search.", icon=":material/photo_library:")
        return
    table = df[SHOWN_COLUMNS].copy()
    table["caption"] = table["caption"].fillna("")  # a repost without caption: blank, not the word "None"
    # what people read and sort by first (caption, account, the sort's column, the counts) fits 1440 px;
    # the ids come last
    first = ["caption", "account", *(["engagement", "published_at"] if sort == "engagement" else ["published_at", "engagement"])]
    order = first + [c for c in ["likes", "comments", "saves", "shares", "reach", "engagement_rate", "media_type",
                                 "action_type", "attempts", "reported_as", "reports", "last_report_date"]
                     if c in table.columns]
    order += [c for c in table.columns if c not in order]
    st.dataframe(table, hide_index=True, width="stretch", key="posts_table", column_order=order, column_config={
        "instagram_id": st.column_config.TextColumn("Media id"),
        "account": st.column_config.TextColumn("Account", width=140),
        "action_type": st.column_config.TextColumn("Action"),
        "caption": st.column_config.TextColumn("Caption", width=300, pinned=True),
        "scheduled_post_id": st.column_config.TextColumn("Scheduled post"),
        "published_at": st.column_config.DatetimeColumn("Published", timezone=str(scope.tz), format="YYYY-MM-DD HH:mm",
                                                        width=135),
        "attempts": st.column_config.NumberColumn("Attempts", help="retry_count + 1: how many tries publishing took"),
        "engagement": st.column_config.NumberColumn("Engagement", format="localized", width=95),
        "likes": st.column_config.NumberColumn("Likes", format="localized"),
        "comments": st.column_config.NumberColumn("Comments", format="localized"),
        "saves": st.column_config.NumberColumn("Saves", format="localized"),
        "shares": st.column_config.NumberColumn("Shares", format="localized"),
        "reach": st.column_config.NumberColumn("Reach", format="localized"),
        "engagement_rate": st.column_config.NumberColumn("Eng. rate %", format="%.2f"),
        "media_type": st.column_config.TextColumn("Type"),
        "reported_as": st.column_config.TextColumn("In reports as"),
        "reports": st.column_config.NumberColumn("Reports"),
        "last_report_date": st.column_config.DatetimeColumn("Last report", timezone=str(scope.tz), format="YYYY-MM-DD"),
        "queue_id": st.column_config.TextColumn("Queue row"),
    })
    st.caption("Engagement, likes, comments, saves, shares and reach come from the reports' top_performing, "
               "best_post and worst_post entries with the same media id (the newest report wins); empty when no "
               "report mentions the post.")


def _export_rows(conn, filt: lp.PostsFilter, sort: str, names: dict[str, str]):
    idx = [lp.COLUMNS.index(c) for c in SHOWN_COLUMNS]
    for chunk in lp.export_chunks(conn, filt=filt, sort=sort, cap=EXPORT_CAP, names=names):
        yield [tuple(row[i] for i in idx) for row in chunk]
