"""Posts: what the queue published, joined with what the reports say about that media.

A published post is a post_queue row with action_type publish_post or repost_ugc and status
`sent`; its instagram_id is the published media id (docs: the id the publish step returns). The
reports (analytics_reports.media_metrics) name media by media_id in `top_performing`
(engagement, caption_snippet), `best_post` and `worst_post` (likes, comments, reach, ...). The
join is on instagram_id = media_id.

Reads are bounded: the view covers a published-time range; it holds every row whose media a report
in the range mentions (a small set: a report names at most a few posts) and the newest `limit`
other rows, so the cold view stays one index range scan however big post_queue is.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from lib.analytics import reports as an
from lib.core.schema import instagram_business_accounts, post_queue
from lib.core.text import md_escape
from lib.core.timeutil import as_utc

PUBLISH_ACTIONS = ("publish_post", "repost_ugc")
REPORT_KINDS = ("top_performing", "best_post", "worst_post")
STAT_FIELDS = ("engagement", "likes", "comments", "saves", "shares", "reach", "engagement_rate")
COLUMNS = ("instagram_id", "account", "action_type", "caption", "scheduled_post_id", "published_at", "attempts",
           "engagement", "likes", "comments", "saves", "shares", "reach", "engagement_rate", "media_type",
           "reported_as", "reports", "last_report_date", "queue_id", "business_account_id")
SORTS = ("engagement", "published")
DEFAULT_LIMIT = 1_000
REPORT_MARGIN = timedelta(days=8)  # a weekly report dated up to a week after the post still speaks of it


@dataclass(frozen=True)
class PostsFilter:
    since: datetime
    until: datetime
    account_id: uuid.UUID | None = None
    search: str | None = None  # case-insensitive substring of the caption
    reported_only: bool = False  # only posts that a report mentions

    def clauses(self, *, for_count: bool = False) -> list:
        q = post_queue
        out = [q.c.status == "sent", q.c.action_type.in_(PUBLISH_ACTIONS), q.c.updated_at >= self.since,
               q.c.updated_at < self.until]
        if not for_count:  # a sent publish row has its media id; the count stays an index-only range scan
            out.append(q.c.instagram_id.is_not(None))
        if self.account_id is not None:
            out.append(q.c.business_account_id == self.account_id)
        if self.search and self.search.strip():
            out.append(sa.func.lower(caption_expr()).contains(self.search.strip().lower(), autoescape=True))
        return out



def _matches(filt: PostsFilter, row: dict[str, Any]) -> bool:
    t = as_utc(row["updated_at"])
    if row["status"] != "sent" or row["action_type"] not in PUBLISH_ACTIONS or row["instagram_id"] is None:
        return False
    if t is None or not (filt.since <= t < filt.until):
        return False
    if filt.account_id is not None and str(row["business_account_id"]) != str(filt.account_id):
        return False
    if filt.search and filt.search.strip():
        return filt.search.strip().lower() in str(row["caption"] or "").lower()
    return True


PostsFilter.matches = _matches  # the filter's clauses, in Python, for rows read by media id


def caption_expr():
    return post_queue.c.payload["caption"].as_string()


# --------------------------------------------------------------------------- pure: report side

def media_stats(reports: Iterable[an.Report]) -> dict[str, dict[str, Any]]:
    """media_id -> what the reports say: the stat fields (best_post/worst_post give likes, comments,
    reach; top_performing gives engagement), the kinds it appeared as, how many reports, the newest
    report date. Of several reports, the newest value of each field wins (later insights are more
    complete); reports are read oldest first."""
    out: dict[str, dict[str, Any]] = {}
    for r in reports:
        media = r.sections.get("media_metrics") or {}
        entries: list[tuple[str, dict]] = [("top_performing", p) for p in media.get("top_performing") or []]
        entries += [(k, media[k]) for k in ("best_post", "worst_post") if isinstance(media.get(k), dict)]
        seen_here: set[str] = set()
        for kind, post in entries:
            mid = post.get("media_id")
            if mid in (None, ""):
                continue
            mid = str(mid)
            s = out.setdefault(mid, {"reported_as": set(), "reports": 0, "last_report_date": None})
            s["reported_as"].add(kind)
            for f in STAT_FIELDS:
                if post.get(f) is not None:
                    s[f] = post[f]
            if post.get("media_type"):
                s["media_type"] = str(post["media_type"])
            if mid not in seen_here:
                seen_here.add(mid)
                s["reports"] += 1
                s["last_report_date"] = r.report_date
    return out


NO_CAPTION = "—"
MEDIA_TYPE_LABELS = {"IMAGE": "Image", "VIDEO": "Video", "REELS": "Reel", "CAROUSEL_ALBUM": "Carousel",
                     "CAROUSEL": "Carousel", "STORIES": "Story"}
BEST_WORST_COLUMNS = ("rank", "media_id", "media_type", "caption", "engagement", "likes", "comments", "reach")


def caption_text(value: Any) -> str:
    """A caption for display: missing, empty or the text "None" -> NO_CAPTION."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return NO_CAPTION
    text = str(value).strip()
    return text if text and text.lower() not in ("none", "null", "nan") else NO_CAPTION


def best_and_worst(media: dict[str, Any] | None) -> pd.DataFrame:
    """A report's media_metrics.best_post and worst_post as rows of BEST_WORST_COLUMNS, best first.

    A post that is both (a period with one post) is one row, "Best and worst". A caption missing
    from the entry is taken from top_performing's caption_snippet of the same media id."""
    media = media or {}
    snippets = {str(p.get("media_id")): p.get("caption_snippet") for p in media.get("top_performing") or []
                if isinstance(p, dict) and p.get("media_id") not in (None, "")}
    entries = [(rank, media.get(key)) for rank, key in (("Best", "best_post"), ("Worst", "worst_post"))]
    entries = [(rank, post) for rank, post in entries if isinstance(post, dict) and post]
    if len(entries) == 2 and entries[0][1].get("media_id") not in (None, "") \
            and str(entries[0][1].get("media_id")) == str(entries[1][1].get("media_id")):
        entries = [("Best and worst", entries[0][1])]
    rows = []
    for rank, post in entries:
        mid = post.get("media_id")
        mid = None if mid in (None, "") else str(mid)
        kind = post.get("media_type")
        caption = caption_text(post.get("caption_snippet") or post.get("caption"))
        rows.append({"rank": rank, "media_id": mid,
                     "media_type": None if kind in (None, "") else MEDIA_TYPE_LABELS.get(str(kind), str(kind)),
                     "caption": caption if caption != NO_CAPTION else caption_text(snippets.get(mid)),
                     **{f: _number(post.get(f)) for f in ("engagement", "likes", "comments", "reach")}})
    return pd.DataFrame(rows, columns=list(BEST_WORST_COLUMNS))


BEST_WORST_LABELS = {"account": "Account", "rank": "Post", "media_type": "Type", "caption": "Caption",
                     "engagement": "Engagement", "likes": "Likes", "comments": "Comments", "reach": "Reach"}
BEST_WORST_CAPTION_CHARS = 140  # of a caption in the table (the report details show it whole)
_NUMERIC = ("engagement", "likes", "comments", "reach")


def best_worst_markdown(table: pd.DataFrame) -> str:
    """Rows of best_and_worst (with an optional "account" column first) as one Markdown table, without
    the media id; untrusted text escaped (a `|` cannot end a cell), numbers with thousands separators,
    "—" for a missing value. An empty string for no rows."""
    if table.empty:
        return ""
    columns = [c for c in BEST_WORST_LABELS if c in table.columns]
    lines = ["| " + " | ".join(BEST_WORST_LABELS[c] for c in columns) + " |",
             "|" + "".join("---:|" if c in _NUMERIC else ":---|" for c in columns)]
    for row in table.to_dict("records"):
        cells = []
        for c in columns:
            value = row.get(c)
            if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
                cells.append("—")
            elif c in _NUMERIC:
                cells.append(an.fmt_value(float(value), "count"))
            elif c == "caption" and len(str(value)) > BEST_WORST_CAPTION_CHARS:
                cells.append(md_escape(str(value)[:BEST_WORST_CAPTION_CHARS].rstrip()) + "…")
            else:
                cells.append(md_escape(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def join_posts(rows: Sequence[dict[str, Any]], stats: dict[str, dict[str, Any]], names: dict[str, str],
               *, sort: str = "engagement") -> pd.DataFrame:
    """Queue rows (see fetch_published) joined with media_stats, in COLUMNS order."""
    out = []
    for row in rows:
        s = stats.get(str(row["instagram_id"]), {})
        acc = None if row["business_account_id"] is None else str(row["business_account_id"])
        out.append({
            "instagram_id": str(row["instagram_id"]),
            "account": names.get(acc, acc),
            "action_type": row["action_type"],
            "caption": row["caption"],
            "scheduled_post_id": row["scheduled_post_id"],
            "published_at": as_utc(row["updated_at"]),
            "attempts": int(row["retry_count"] or 0) + 1,
            **{f: s.get(f) for f in STAT_FIELDS},
            "media_type": s.get("media_type"),
            "reported_as": ", ".join(k for k in REPORT_KINDS if k in s.get("reported_as", ())) or None,
            "reports": int(s.get("reports", 0)),
            "last_report_date": s.get("last_report_date"),
            "queue_id": str(row["id"]),
            "business_account_id": acc,
        })
    df = pd.DataFrame(out, columns=list(COLUMNS))
    for f in STAT_FIELDS:
        df[f] = pd.to_numeric(df[f], errors="coerce").astype("float64")
    df["attempts"] = df["attempts"].astype("int64")
    df["reports"] = df["reports"].astype("int64")
    df["published_at"] = pd.to_datetime(df["published_at"], utc=True)
    df["last_report_date"] = pd.to_datetime(df["last_report_date"], utc=True)
    if sort == "engagement":
        df = df.sort_values(["engagement", "published_at", "queue_id"], ascending=[False, False, True],
                            na_position="last", kind="stable")
    else:
        df = df.sort_values(["published_at", "queue_id"], ascending=[False, True], kind="stable")
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- queries

def _queue_columns():
    q = post_queue
    return (q.c.id, q.c.business_account_id, q.c.action_type, q.c.instagram_id, q.c.retry_count, q.c.updated_at,
            caption_expr().label("caption"), q.c.payload["scheduled_post_id"].as_string().label("scheduled_post_id"))


def report_media(conn: sa.Connection, *, filt: PostsFilter) -> dict[str, dict[str, Any]]:
    """media_stats of the reports (daily and weekly) dated from the range's start to a week after its end."""
    account_ids = None if filt.account_id is None else [filt.account_id]
    rows = an.fetch_reports(conn, account_ids=account_ids, start=filt.since, end=filt.until + REPORT_MARGIN,
                            sections=("media_metrics",))
    return media_stats(an.parse_report(r) for r in rows)


def fetch_published(conn: sa.Connection, *, filt: PostsFilter, media_ids: Sequence[str],
                    limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Every matching row whose media a report mentions, and the newest `limit` others."""
    q = post_queue
    rows: dict[Any, dict] = {}
    ids = list(media_ids)
    for start in range(0, len(ids), 500):  # bounded IN lists
        part = ids[start:start + 500]
        # the media ids alone: an index lookup on ix_post_queue_instagram_id (with the filter's other
        # conditions beside it, SQLite's planner preferred the (status, updated_at) index and read
        # the whole range: 6 s at 200,000 rows); the rest of the filter is applied to the few rows found
        for r in conn.execute(sa.select(*_queue_columns(), q.c.status).where(q.c.instagram_id.in_(part))):
            row = dict(r._mapping)
            if filt.matches(row):
                row.pop("status")
                rows[r.id] = row
    if not filt.reported_only and limit > 0:
        # per action type, in the order of ix_post_queue_action_type_status_updated_at: each read stops
        # after `limit` index entries (one query over both types sorted all rows of the range first)
        found = []
        for action in PUBLISH_ACTIONS:
            conds = [c for c in filt.clauses() if not _is_action_in(c)] + [q.c.action_type == action]
            newest = sa.select(*_queue_columns()).where(*conds).order_by(q.c.updated_at.desc()).limit(limit)
            found += [dict(r._mapping) for r in conn.execute(newest)]
        found.sort(key=lambda r: (-as_utc(r["updated_at"]).timestamp(), str(r["id"])))
        for r in found[:limit]:
            rows.setdefault(r["id"], r)
    return list(rows.values())


def _is_action_in(clause) -> bool:
    left = getattr(clause, "left", None)
    return left is post_queue.c.action_type and getattr(clause, "operator", None) is not None \
        and clause.operator.__name__ == "in_op"


def count_published(conn: sa.Connection, *, filt: PostsFilter) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(post_queue)
                            .where(*filt.clauses(for_count=True))).scalar() or 0)


def account_names(conn: sa.Connection) -> dict[str, str]:
    t = instagram_business_accounts
    return {str(r.id): r.username or str(r.id) for r in conn.execute(sa.select(t.c.id, t.c.username))}


@dataclass
class PostsView:
    frame: pd.DataFrame  # COLUMNS
    total: int  # published rows matching the filter (the frame may hold fewer: see fetch_published)
    reported: int  # rows of the frame that a report mentions


def posts_view(conn: sa.Connection, *, filt: PostsFilter, sort: str = "engagement",
               limit: int = DEFAULT_LIMIT, names: dict[str, str] | None = None) -> PostsView:
    stats = report_media(conn, filt=filt)
    rows = fetch_published(conn, filt=filt, media_ids=sorted(stats), limit=limit)
    frame = join_posts(rows, stats, names if names is not None else account_names(conn), sort=sort)
    return PostsView(frame, count_published(conn, filt=filt), int((frame["reports"] > 0).sum()))


def export_chunks(conn: sa.Connection, *, filt: PostsFilter, sort: str = "engagement", cap: int = 100_000,
                  names: dict[str, str] | None = None):
    """The view's rows for an export (COLUMNS order), every matching row up to `cap`: the queue
    rows are read from a server-side cursor; the report side is the small media_stats dict."""
    stats = report_media(conn, filt=filt)
    names = names if names is not None else account_names(conn)
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(
        sa.select(*_queue_columns()).where(*filt.clauses()).order_by(post_queue.c.updated_at.desc(), post_queue.c.id)
        .limit(cap))
    frames = []
    try:
        for part in result.partitions(5000):
            frames.append(join_posts([dict(r._mapping) for r in part], stats, names, sort="published"))
    finally:
        result.close()
    df = pd.concat(frames, ignore_index=True) if frames else join_posts([], stats, names)
    if sort == "engagement":
        df = df.sort_values(["engagement", "published_at", "queue_id"], ascending=[False, False, True],
                            na_position="last", kind="stable")
    yield from [list(df.astype(object).where(df.notna(), None).itertuples(index=False, name=None))]
