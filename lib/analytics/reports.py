"""analytics_reports: queries, and pure validation/flattening/deltas with pandas.

Real rows are messy: JSON stored as text (or double-encoded), malformed JSON, numbers stored as
strings, nulls, missing or extra keys, wrong types. `parse_report` turns one row into a clean
`Report` and a list of the problems it found; nothing here raises on bad data. Unusable values
are dropped (they become missing), the rest of the report stays usable.

The JSON columns are read as text (`CAST(... AS TEXT)`) on both databases so that a malformed
value cannot break the query (SQLAlchemy's JSON type would raise while decoding it) and so that
SQLite and PostgreSQL go through the same parser.
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from lib.analytics import catalogue
from lib.core.schema import analytics_reports as reports_table
from lib.core.text import md_escape
from lib.core.timeutil import as_utc

REPORT_TYPES = ("daily", "weekly")
SECTIONS = ("instagram_metrics", "media_metrics", "revenue_metrics", "historical_comparison", "insights", "data_sources")
# What the long series (charts, period comparison, computed deltas) need. historical_comparison,
# insights and data_sources are read only for the few reports shown in full, and for the export.
CHART_SECTIONS = ("instagram_metrics", "media_metrics", "revenue_metrics")
META_COLUMNS = ("id", "business_account_id", "report_type", "report_date", "start_date", "end_date", "processed_at", "run_id")

# The report fields that must be numbers (strings holding numbers are accepted).
NUMERIC_FIELDS: dict[str, tuple[str, ...]] = {
    "instagram_metrics": (
        "impressions", "reach", "profile_views", "website_clicks", "follower_growth", "followers_count",
        "posts_published", "total_likes", "total_comments", "total_saves", "total_shares", "avg_engagement_rate",
    ),
    "media_metrics": (
        "total_posts", "total_posts_in_period", "avg_likes", "avg_comments", "avg_likes_per_post",
        "avg_comments_per_post", "avg_reach", "avg_engagement_rate",
    ),
    "revenue_metrics": (
        "attributed_revenue", "attribution_count", "avg_order_value", "conversion_rate", "attributed_orders",
        "avg_attribution_score",
    ),
    "historical_comparison": ("impressions_delta", "reach_delta", "engagement_delta", "follower_delta"),
}
CHANGE_FIELDS = ("previous", "current", "change_pct")
INSIGHT_KINDS = ("key_findings", "recommendations", "anomalies")
POST_NUMERIC_FIELDS = ("engagement", "likes", "comments", "saves", "shares", "reach", "engagement_rate")


# --------------------------------------------------------------------------- pure: parsing

@dataclass
class Report:
    """One analytics_reports row after validation. Sections are dicts (insights: lists of str)."""

    id: str
    business_account_id: str | None
    report_type: str | None
    report_date: datetime | None
    start_date: str | None
    end_date: str | None
    processed_at: datetime | None = None
    run_id: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def period(self) -> str:
        """'2026-11-16 – 2026-11-22', or the one day, or the report date when the row has no period."""
        start, end = self.start_date, self.end_date
        if start and end and start != end:
            return f"{start} – {end}"
        if start or end:
            return str(start or end)
        return self.report_date.date().isoformat() if self.report_date else "unknown period"


def load_json(value: Any) -> tuple[Any, str | None]:
    """Decode a JSON column value: dict/list as is, text decoded (twice when double-encoded).

    Returns (value or None, problem or None)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="replace")
    for _ in range(3):
        if not isinstance(value, str):
            return value, None
        text = value.strip()
        if text == "" or text == "null":
            return None, None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None, "malformed JSON"
    return None, "malformed JSON"


def to_number(value: Any) -> tuple[float | None, bool]:
    """(number, ok). None -> (None, True). Numeric strings ('1,234', ' 12.5 ', '3.1%') are accepted;
    booleans, NaN/inf, other strings and containers are not usable -> (None, False)."""
    kind = type(value)
    if kind is float:  # the common cases first
        return (value, True) if math.isfinite(value) else (None, False)
    if kind is int:
        try:
            return float(value), True
        except OverflowError:
            return None, False
    if value is None:
        return None, True
    if isinstance(value, bool):
        return None, False
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "").rstrip("%").strip()
        if text == "":
            return None, True
        try:
            number = float(text)
        except ValueError:
            return None, False
    else:
        return None, False
    if math.isnan(number) or math.isinf(number):
        return None, False
    return number, True


def _clean_numbers(obj: Mapping, numeric: Iterable[str], where: str, problems: list[str]) -> dict[str, Any]:
    """Copy of obj with the named fields as floats; unusable ones dropped (and reported)."""
    out = dict(obj)
    for key in numeric:
        if key in out:
            number, ok = to_number(out[key])
            if not ok:
                problems.append(f"{where}.{key}: not a number ({_short(out[key])})")
            if number is None:
                out.pop(key)
            else:
                out[key] = number
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_object(value: Any, where: str, problems: list[str]) -> dict | None:
    value, problem = load_json(value)
    if problem:
        problems.append(f"{where}: {problem}")
        return None
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a JSON object, got {type(value).__name__}")
        return None
    return value


def _clean_posts(value: Any, where: str, problems: list[str]) -> list[dict]:
    value, problem = load_json(value)
    if problem:
        problems.append(f"{where}: {problem}")
        return []
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where}: expected a list, got {type(value).__name__}")
        return []
    posts = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            problems.append(f"{where}[{i}]: not an object")
            continue
        posts.append(_clean_numbers(item, [k for k in POST_NUMERIC_FIELDS if k in item], f"{where}[{i}]", problems))
    return posts


LEAN_SKIPPED = {"media_metrics": ("top_performing", "best_post", "worst_post"),
                "historical_comparison": ("changes", "previous_period")}


def _clean_media(obj: dict, problems: list[str], full: bool = True) -> dict:
    out = _clean_numbers(obj, NUMERIC_FIELDS["media_metrics"], "media_metrics", problems)
    if not full:
        for key in LEAN_SKIPPED["media_metrics"]:
            out.pop(key, None)
    if "top_performing" in out:
        out["top_performing"] = _clean_posts(out["top_performing"], "media_metrics.top_performing", problems)
    for key in ("best_post", "worst_post"):
        if key in out:
            post = _as_object(out[key], f"media_metrics.{key}", problems)
            if post is None:
                out.pop(key)
            else:
                out[key] = _clean_numbers(post, [k for k in POST_NUMERIC_FIELDS if k in post], f"media_metrics.{key}", problems)
    if "by_media_type" in out:
        by_type = _as_object(out["by_media_type"], "media_metrics.by_media_type", problems)
        cleaned: dict[str, dict] = {}
        for media_type, stats in (by_type or {}).items():
            where = f"media_metrics.by_media_type.{media_type}"
            if not isinstance(stats, dict):  # {"VIDEO": 12} read as a post count
                number, ok = to_number(stats)
                if ok and number is not None:
                    cleaned[str(media_type)] = {"count": number}
                elif not ok:
                    problems.append(f"{where}: not a number or object ({_short(stats)})")
                continue
            numbers = {k: to_number(v)[0] for k, v in stats.items()}  # free-form: keep what is numeric
            cleaned[str(media_type)] = {str(k): v for k, v in numbers.items() if v is not None}
        out["by_media_type"] = cleaned
    return out


def _clean_comparison(obj: dict, problems: list[str], full: bool = True) -> dict:
    out = _clean_numbers(obj, NUMERIC_FIELDS["historical_comparison"], "historical_comparison", problems)
    if not full:
        for key in LEAN_SKIPPED["historical_comparison"]:
            out.pop(key, None)
    if "changes" in out:
        changes = _as_object(out["changes"], "historical_comparison.changes", problems)
        cleaned: dict[str, dict] = {}
        for metric, change in (changes or {}).items():
            where = f"historical_comparison.changes.{metric}"
            if not isinstance(change, dict):
                problems.append(f"{where}: expected an object")
                continue
            entry = _clean_numbers(change, CHANGE_FIELDS, where, problems)
            entry = {k: entry[k] for k in (*CHANGE_FIELDS, "trend") if k in entry}
            if "trend" in entry and not isinstance(entry["trend"], str):
                entry["trend"] = str(entry["trend"])
            if any(k in entry for k in CHANGE_FIELDS):
                cleaned[str(metric)] = entry
        out["changes"] = cleaned
    if "previous_period" in out and not isinstance(out["previous_period"], dict):
        problems.append("historical_comparison.previous_period: expected an object")
        out.pop("previous_period")
    return out


def _clean_insights(obj: dict, problems: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind in INSIGHT_KINDS:
        items = obj.get(kind)
        if items is None:
            continue
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            problems.append(f"insights.{kind}: expected a list")
            continue
        texts = []
        for item in items:
            if isinstance(item, str):
                if item.strip():
                    texts.append(item.strip())
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                texts.append(str(item))
            else:
                problems.append(f"insights.{kind}: skipped a {type(item).__name__} item")
        out[kind] = texts
    return out


def parse_report(row: Mapping[str, Any], full: bool = True) -> Report:
    """Validate one row (a mapping with the table's column names; JSON columns as text or decoded).

    full=False is the lean parse for long series: it leaves out (unvalidated) the per-report
    details the charts do not use: top/best/worst posts, historical_comparison.changes and
    previous_period (see LEAN_SKIPPED)."""
    problems: list[str] = []
    report_date = _as_datetime(row.get("report_date"), "report_date", problems)
    report = Report(
        id=str(row.get("id")),
        business_account_id=None if row.get("business_account_id") is None else str(row.get("business_account_id")),
        report_type=row.get("report_type"),
        report_date=report_date,
        start_date=_as_day(row.get("start_date")),
        end_date=_as_day(row.get("end_date")),
        processed_at=_as_datetime(row.get("processed_at"), "processed_at", problems),
        run_id=row.get("run_id"),
    )
    for name in SECTIONS:
        if name not in row:
            continue
        if name == "data_sources":
            value, problem = load_json(row[name])
            if problem:
                problems.append(f"data_sources: {problem}")
            elif value is not None:
                report.sections[name] = value if isinstance(value, list) else [value]
            continue
        obj = _as_object(row[name], name, problems)
        if obj is None:
            continue
        if name == "media_metrics":
            obj = _clean_media(obj, problems, full)
        elif name == "historical_comparison":
            obj = _clean_comparison(obj, problems, full)
        elif name == "insights":
            obj = _clean_insights(obj, problems)
        else:
            obj = _clean_numbers(obj, NUMERIC_FIELDS[name], name, problems)
        report.sections[name] = obj
    report.problems = problems
    return report


def _as_datetime(value: Any, where: str, problems: list[str]) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(str(value))
    except ValueError:
        problems.append(f"{where}: not a date ({_short(value)})")
        return None


def _as_day(value: Any) -> str | None:
    """Period bounds are text in the spec: keep the day part of an ISO date/time, else the text."""
    if value is None:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()[:10]
    text = str(value).strip()
    return text[:10] if len(text) >= 10 and text[4:5] == "-" else (text or None)


# --------------------------------------------------------------------------- pure: flattening

def flatten(obj: Mapping[str, Any], prefix: str, lists: bool = True, out: dict | None = None) -> dict[str, Any]:
    """Nested dicts as dotted keys; lists as JSON text (one cell each), or left out (lists=False)."""
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flatten(value, name, lists, out)
        elif isinstance(value, list):
            if lists:
                out[name] = json.dumps(value, ensure_ascii=False, default=str)
        else:
            out[name] = value
    return out


def flatten_report(report: Report, lists: bool = True) -> dict[str, Any]:
    """One flat row: the metadata, then `section.key[.subkey]` columns, then the problems.

    lists=False leaves out list values (top posts, insight lists): the charts do not need them."""
    row: dict[str, Any] = {
        "id": report.id,
        "business_account_id": report.business_account_id,
        "report_type": report.report_type,
        "report_date": report.report_date,
        "start_date": report.start_date,
        "end_date": report.end_date,
        "processed_at": report.processed_at,
        "run_id": report.run_id,
    }
    for name in SECTIONS:
        value = report.sections.get(name)
        if isinstance(value, dict):
            flatten(value, name, lists, row)
        elif isinstance(value, list) and lists:
            row[name] = json.dumps(value, ensure_ascii=False, default=str)
    row["problems"] = "; ".join(report.problems)
    return row


def reports_frame(reports: Sequence[Report], lists: bool = True) -> pd.DataFrame:
    """Flattened reports, one row per report, ordered by account and report date.

    Columns of the spec's numeric fields are float even when some reports lack them."""
    rows = [flatten_report(r, lists) for r in reports]
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*META_COLUMNS, "problems"])
    for section, keys in NUMERIC_FIELDS.items():
        for key in keys:
            col = f"{section}.{key}"
            df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")
    df["report_date"] = pd.to_datetime(df["report_date"], utc=True)
    df = df.sort_values(["business_account_id", "report_date", "id"], na_position="first", kind="stable")
    return df.reset_index(drop=True)


def csv_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The export's column order: metadata, then sections in spec order (keys sorted), problems last."""
    meta = [c for c in META_COLUMNS if c in df]
    rest = sorted((c for c in df.columns if c not in meta and c != "problems"),
                  key=lambda c: (SECTIONS.index(c.split(".")[0]) if c.split(".")[0] in SECTIONS else 99, c))
    return df[[*meta, *rest, *(["problems"] if "problems" in df else [])]]


@dataclass(frozen=True)
class ProblemSummary:
    reports: int
    with_problems: int
    kinds: dict[str, int]  # 'malformed JSON': 2, 'not a number': 1, ...
    examples: list[dict]  # up to 50 {id, report_date, problem}

    @property
    def note(self) -> str | None:
        if not self.with_problems:
            return None
        kinds = ", ".join(f"{n} × {k}" for k, n in sorted(self.kinds.items(), key=lambda kv: -kv[1]))
        return (f"{self.with_problems} of {self.reports} reports had unusable values; those values were skipped "
                f"and the rest of each report is shown ({kinds}).")


def problem_kind(problem: str) -> str:
    text = problem.split(": ", 1)[-1]
    return text.split(" (")[0]


def summarize_problems(reports: Sequence[Report], max_examples: int = 50) -> ProblemSummary:
    kinds: dict[str, int] = {}
    examples: list[dict] = []
    with_problems = 0
    for r in reports:
        if not r.problems:
            continue
        with_problems += 1
        for p in r.problems:
            kind = problem_kind(p)
            kinds[kind] = kinds.get(kind, 0) + 1
            if len(examples) < max_examples:
                examples.append({"report_id": r.id, "business_account_id": r.business_account_id,
                                 "period": r.period, "problem": p})
    return ProblemSummary(len(reports), with_problems, kinds, examples)


# --------------------------------------------------------------------------- pure: KPIs and deltas

@dataclass(frozen=True)
class KpiDef:
    key: str
    label: str
    column: str  # flattened column
    metric: str  # name in historical_comparison.changes
    delta_field: str | None = None  # historical_comparison.<x>_delta
    kind: str = "count"  # count | rate | money


def _kpi(key: str, column: str, metric_name: str, delta_field: str | None = None) -> KpiDef:
    m = catalogue.metric(column)
    return KpiDef(key, m.name, column, metric_name, delta_field, m.kind)


KPIS = (
    _kpi("followers", "instagram_metrics.followers_count", "followers_count", "follower_delta"),
    _kpi("follower_growth", "instagram_metrics.follower_growth", "follower_growth"),
    _kpi("reach", "instagram_metrics.reach", "reach", "reach_delta"),
    _kpi("impressions", "instagram_metrics.impressions", "impressions", "impressions_delta"),
    _kpi("profile_views", "instagram_metrics.profile_views", "profile_views"),
    _kpi("website_clicks", "instagram_metrics.website_clicks", "website_clicks"),
    _kpi("avg_engagement_rate", "instagram_metrics.avg_engagement_rate", "avg_engagement_rate"),
    _kpi("attributed_revenue", "revenue_metrics.attributed_revenue", "attributed_revenue"),
)

FROM_COMPARISON = "historical_comparison"
FROM_PREVIOUS = "previous report"


@dataclass(frozen=True)
class Kpi:
    key: str
    label: str
    kind: str
    value: float | None
    delta: float | None
    delta_pct: float | None
    source: str | None  # FROM_COMPARISON, FROM_PREVIOUS or None (no delta)


def _num(row: Mapping[str, Any] | None, key: str) -> float | None:
    if row is None:
        return None
    value = row.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def kpi_deltas(latest: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Kpi]:
    """KPIs of a flattened report. Each delta comes from the report's own historical_comparison
    (`<x>_delta`, else `changes.<metric>`) when it has one, else from the previous report."""
    out = []
    for d in KPIS:
        value = _num(latest, d.column)
        hc = "historical_comparison."
        change = f"{hc}changes.{d.metric}."
        delta = pct = None
        source = None
        explicit = _num(latest, hc + d.delta_field) if d.delta_field else None
        cur, prev, change_pct = (_num(latest, change + k) for k in ("current", "previous", "change_pct"))
        if explicit is not None:
            delta, source = explicit, FROM_COMPARISON
            base = (value - explicit) if value is not None else prev
            pct = change_pct if change_pct is not None else (explicit / base * 100 if base else None)
        elif cur is not None and prev is not None:
            delta, source = cur - prev, FROM_COMPARISON
            pct = change_pct if change_pct is not None else ((cur - prev) / prev * 100 if prev else None)
        elif change_pct is not None:
            source, pct = FROM_COMPARISON, change_pct
            if value is not None and change_pct != -100:
                delta = value - value / (1 + change_pct / 100)
        else:
            before = _num(previous, d.column)
            if value is not None and before is not None:
                delta, source = value - before, FROM_PREVIOUS
                pct = delta / before * 100 if before else None
        out.append(Kpi(d.key, d.label, d.kind, value, delta, pct, source))
    return out


def latest_and_previous(df: pd.DataFrame, account_id: str) -> tuple[dict | None, dict | None]:
    """The newest report of one account in a frame ordered by report date, and the one before it."""
    mine = df[df["business_account_id"] == account_id]
    if mine.empty:
        return None, None
    latest = mine.iloc[-1].to_dict()
    previous = mine.iloc[-2].to_dict() if len(mine) > 1 else None
    return latest, previous


def fmt_value(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value:,.2f} %"
    if kind == "money":
        return f"${value:,.2f}"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"


def fmt_delta(kpi: Kpi) -> str | None:
    if kpi.delta is None and kpi.delta_pct is None:
        return None
    parts = []
    if kpi.delta is not None:
        sign = "+" if kpi.delta > 0 else ("-" if kpi.delta < 0 else "±")
        if kpi.kind == "rate":
            parts.append(f"{sign}{abs(kpi.delta):,.2f} pts")
        else:
            parts.append(sign + fmt_value(abs(kpi.delta), kpi.kind))
    if kpi.delta_pct is not None:
        text = f"{kpi.delta_pct:+.1f} %"
        parts.append(f"({text})" if parts else text)
    return " ".join(parts)


NBSP = "\u00a0"


def _board_cell(k: Kpi) -> str:
    """A KPI's value and, in small type, its change (in %, else absolute), green up / red down as on
    its card. Non-breaking spaces: a narrow column wraps between the value and the change only."""
    value = md_escape(fmt_value(k.value, k.kind)).replace(" ", NBSP)
    if k.delta is None and k.delta_pct is None:
        return value
    change = f"{k.delta_pct:+.1f} %" if k.delta_pct is not None else fmt_delta(k) or ""
    sign = k.delta_pct if k.delta_pct is not None else k.delta
    color = "green" if sign > 0 else ("red" if sign < 0 else "gray")
    return f"{value} :small[:{color}[{md_escape(change).replace(' ', NBSP)}]]"


def kpi_board(rows: list[tuple[str, str, list[Kpi]]], with_period: bool = True) -> str:
    """Several accounts' KPIs as one Markdown table: a row per account (name, the latest report's
    period when `with_period`, each KPI with its change). Untrusted names and periods are escaped
    (a `|` cannot end a cell). An empty string for no rows."""
    if not rows:
        return ""
    head = ["Account"] + (["Latest report"] if with_period else []) + [d.label for d in KPIS]
    lines = ["| " + " | ".join(md_escape(h) for h in head) + " |",
             "|" + ":---|" * (2 if with_period else 1) + "---:|" * len(KPIS)]
    for name, period, kpis in rows:
        cells = [f"**{md_escape(name)}**"] + ([md_escape(period)] if with_period else [])
        by_key = {k.key: k for k in kpis}
        cells += [_board_cell(by_key[d.key]) if d.key in by_key else "—" for d in KPIS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- pure: long data for charts

def long_series(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """(report_date, business_account_id, period, metric, value) for the given flattened columns;
    missing values dropped. `metric` is the column's last dotted part."""
    present = [c for c in columns if c in df]
    if df.empty or not present:
        return pd.DataFrame(columns=["report_date", "business_account_id", "period", "metric", "value"])
    base = df[["report_date", "business_account_id", "start_date", "end_date", *present]].copy()
    base["period"] = [period_text(s, e) for s, e in zip(base["start_date"], base["end_date"])]
    long = base.melt(id_vars=["report_date", "business_account_id", "period"], value_vars=present,
                     var_name="metric", value_name="value")
    long["metric"] = long["metric"].str.rsplit(".", n=1).str[-1]
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def period_text(start: Any, end: Any) -> str:
    start = None if start is None or (isinstance(start, float) and math.isnan(start)) else start
    end = None if end is None or (isinstance(end, float) and math.isnan(end)) else end
    if start and end and start != end:
        return f"{start} – {end}"
    return str(start or end or "")


def media_type_breakdown(df: pd.DataFrame) -> pd.DataFrame:
    """by_media_type over the reports in the frame, per account and media type: posts (sum of
    count) and the count-weighted mean of every other field."""
    prefix = "media_metrics.by_media_type."
    cols = [c for c in df.columns if c.startswith(prefix)]
    out_cols = ["business_account_id", "media_type", "field", "value"]
    if df.empty or not cols:
        return pd.DataFrame(columns=out_cols)
    long = df[["business_account_id", *cols]].melt(id_vars=["business_account_id"], var_name="col", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    parts = long["col"].str[len(prefix):].str.rsplit(".", n=1)
    long["media_type"], long["field"] = parts.str[0], parts.str[1]
    long["row"] = long.groupby(["col"]).cumcount()
    wide = long.pivot_table(index=["business_account_id", "row", "media_type"], columns="field", values="value",
                            aggfunc="first").reset_index()
    rows = []
    for (acc, mtype), grp in wide.groupby(["business_account_id", "media_type"]):
        fields = [c for c in grp.columns if c not in ("business_account_id", "row", "media_type")]
        counts = grp["count"] if "count" in grp else None
        for f in fields:
            values = grp[f]
            if values.notna().sum() == 0:
                continue
            if f == "count":
                value = float(values.sum())
            elif counts is not None and (counts[values.notna()] > 0).any():
                ok = values.notna() & counts.notna()
                value = float((values[ok] * counts[ok]).sum() / counts[ok].sum()) if counts[ok].sum() else float(values.mean())
            else:
                value = float(values.mean())
            rows.append({"business_account_id": acc, "media_type": mtype, "field": f, "value": value})
    return pd.DataFrame(rows, columns=out_cols)


def changes_frame(report: Report) -> pd.DataFrame:
    """historical_comparison.changes as rows (metric, previous, current, change_pct, trend), by change."""
    changes = (report.sections.get("historical_comparison") or {}).get("changes") or {}
    rows = [{"metric": m, "previous": c.get("previous"), "current": c.get("current"),
             "change_pct": c.get("change_pct"), "trend": c.get("trend") or _trend(c.get("change_pct"))}
            for m, c in changes.items()]
    df = pd.DataFrame(rows, columns=["metric", "previous", "current", "change_pct", "trend"])
    df = df.dropna(subset=["change_pct"])
    return df.sort_values("change_pct", kind="stable").reset_index(drop=True)


def _trend(pct: float | None) -> str:
    if pct is None:
        return "unknown"
    return "up" if pct > 0 else "down" if pct < 0 else "flat"


def posts_frame(report: Report) -> pd.DataFrame:
    posts = (report.sections.get("media_metrics") or {}).get("top_performing") or []
    rows = [{"media_id": None if p.get("media_id") is None else str(p.get("media_id")),
             "engagement": p.get("engagement"),
             "caption_snippet": None if p.get("caption_snippet") is None else str(p.get("caption_snippet"))}
            for p in posts]
    return pd.DataFrame(rows, columns=["media_id", "engagement", "caption_snippet"])


def post_fields(post: Mapping[str, Any] | None) -> pd.DataFrame:
    """best_post / worst_post (free-form objects) as field/value text rows."""
    rows = [{"field": str(k), "value": json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list))
             else ("" if v is None else (f"{v:,.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)))}
            for k, v in (post or {}).items()]
    return pd.DataFrame(rows, columns=["field", "value"])


# --------------------------------------------------------------------------- pure: period comparison

# How each compared metric adds up over several reports of a period.
COMPARE_METRICS: tuple[tuple[str, str, str], ...] = tuple(
    (m.column, m.label + (" (end of period)" if m.period == "last" else ""), m.period) for m in catalogue.METRICS)


def in_period(df: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Reports whose period lies within [start, end] (days, inclusive). A report without
    start/end dates counts by its report date."""
    if df.empty:
        return df
    fallback = df["report_date"].dt.strftime("%Y-%m-%d")
    s = df["start_date"].where(df["start_date"].notna(), fallback).astype(str)
    e = df["end_date"].where(df["end_date"].notna(), fallback).astype(str)
    return df[(s >= start.isoformat()) & (e <= end.isoformat())]


def aggregate_period(df: pd.DataFrame) -> dict[str, float | None]:
    """One account's reports of a period summed (flows), averaged (rates) or last (stocks)."""
    table = aggregate_by_account(df.assign(business_account_id="_"))
    row = table.iloc[0] if len(table) else pd.Series(dtype=float)
    return {col: _num(row, col) for col, _, _ in COMPARE_METRICS}


def aggregate_by_account(df: pd.DataFrame) -> pd.DataFrame:
    """Per account (index), every COMPARE_METRICS column aggregated as its rule says; NaN = no value."""
    cols = [c for c, _, _ in COMPARE_METRICS]
    if df.empty:
        return pd.DataFrame(columns=cols, dtype=float)
    work = df.sort_values("report_date", kind="stable")
    work = work.assign(**{c: pd.to_numeric(work[c], errors="coerce") if c in work else float("nan") for c in cols})
    groups = work.groupby("business_account_id", sort=True)
    parts = []
    for how, agg in (("sum", lambda g, c: g[c].sum(min_count=1)), ("mean", lambda g, c: g[c].mean()),
                     ("last", lambda g, c: g[c].last())):
        chosen = [c for c, _, h in COMPARE_METRICS if h == how]
        parts.append(agg(groups, chosen))
    return pd.concat(parts, axis=1)[cols]


def compare_periods(df: pd.DataFrame, a: tuple[date, date], b: tuple[date, date]) -> pd.DataFrame:
    """Per account and metric: period A, period B, B - A and the percent change (None when A is 0 or missing).

    When the periods hold different numbers of reports (a day without its daily report), a summed
    metric's percent change compares the average per report instead of the totals, and `basis` says
    so: 6 days against 7 would otherwise read as a fall of a seventh."""
    cols = ["business_account_id", "metric", "how", "a", "b", "change", "change_pct", "basis", "reports_a", "reports_b"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pa, pb = in_period(df, *a), in_period(df, *b)
    va, vb = aggregate_by_account(pa), aggregate_by_account(pb)
    na, nb = pa["business_account_id"].value_counts(), pb["business_account_id"].value_counts()
    rows = []
    for acc in sorted(df["business_account_id"].dropna().unique()):
        ra = va.loc[acc] if acc in va.index else None
        rb = vb.loc[acc] if acc in vb.index else None
        for col, label, how in COMPARE_METRICS:
            x, y = _num(ra, col), _num(rb, col)
            n_a, n_b = int(na.get(acc, 0)), int(nb.get(acc, 0))
            change = None if x is None or y is None else y - x
            basis = "totals" if how == "sum" else {"mean": "average", "last": "end of period"}.get(how, how)
            px, py = x, y
            if how == "sum" and n_a and n_b and n_a != n_b and x is not None and y is not None:
                px, py, basis = x / n_a, y / n_b, f"per report ({n_a} vs {n_b})"
            pct = None if change is None or not px else (py - px) / abs(px) * 100
            rows.append({"business_account_id": acc, "metric": label, "how": how, "a": x, "b": y,
                         "change": change, "change_pct": pct, "basis": basis, "reports_a": n_a, "reports_b": n_b})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- queries

def _columns(sections: Sequence[str]):
    t = reports_table
    meta = [t.c.id, t.c.business_account_id, t.c.report_type, t.c.report_date, t.c.start_date, t.c.end_date,
            t.c.processed_at, t.c.run_id]
    # as text on both dialects: a malformed value cannot break the query, one parser for both
    return meta + [sa.cast(t.c[name], sa.Text).label(name) for name in sections]


def _filters(account_ids: Sequence[uuid.UUID | str] | None, report_type: str | None):
    t = reports_table
    where = []
    if account_ids is not None:
        where.append(t.c.business_account_id.in_([uuid.UUID(str(a)) for a in account_ids]))
    if report_type is not None:
        where.append(t.c.report_type == report_type)
    return where


def fetch_reports(conn: sa.Connection, *, account_ids: Sequence[uuid.UUID | str] | None = None,
                  report_type: str | None = None, start: datetime | None = None, end: datetime | None = None,
                  sections: Sequence[str] = SECTIONS, limit: int | None = None) -> list[dict]:
    """Raw rows (JSON columns as text) with start <= report_date < end, oldest first.

    account_ids None = every account; an empty list = none."""
    if account_ids is not None and not account_ids:
        return []
    t = reports_table
    q = sa.select(*_columns(sections)).where(*_filters(account_ids, report_type))
    if start is not None:
        q = q.where(t.c.report_date >= start)
    if end is not None:
        q = q.where(t.c.report_date < end)
    q = q.order_by(t.c.report_date, t.c.id)
    if limit is not None:
        q = q.limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]


def fetch_reports_by_id(conn: sa.Connection, ids: Sequence[uuid.UUID | str],
                        sections: Sequence[str] = SECTIONS) -> list[dict]:
    """Raw rows (JSON columns as text) of the given report ids."""
    if not ids:
        return []
    t = reports_table
    q = sa.select(*_columns(sections)).where(t.c.id.in_([uuid.UUID(str(i)) for i in ids])).order_by(t.c.id)
    return [dict(r._mapping) for r in conn.execute(q)]


def fetch_previous_reports(conn: sa.Connection, *, account_ids: Sequence[uuid.UUID | str] | None = None,
                           report_type: str | None = None, before: datetime,
                           sections: Sequence[str] = SECTIONS) -> list[dict]:
    """Per account the newest report dated before `before` (the base for deltas at the range's start)."""
    if account_ids is not None and not account_ids:
        return []
    t = reports_table
    newest = (
        sa.select(t.c.business_account_id, sa.func.max(t.c.report_date).label("report_date"))
        .where(t.c.report_date < before, *_filters(account_ids, report_type))
        .group_by(t.c.business_account_id)
        .subquery()
    )
    q = (
        sa.select(*_columns(sections))
        .join(newest, sa.and_(t.c.business_account_id == newest.c.business_account_id,
                              t.c.report_date == newest.c.report_date))
        .where(*_filters(account_ids, report_type))
        .order_by(t.c.business_account_id, t.c.id)
    )
    rows = [dict(r._mapping) for r in conn.execute(q)]
    seen, out = set(), []
    for r in rows:  # two reports on the same timestamp: keep one
        if r["business_account_id"] not in seen:
            seen.add(r["business_account_id"])
            out.append(r)
    return out


def load_reports(conn: sa.Connection, *, account_ids=None, report_type=None, start=None, end=None,
                 sections: Sequence[str] = CHART_SECTIONS, full: bool = True) -> list[Report]:
    return [parse_report(r, full) for r in fetch_reports(conn, account_ids=account_ids, report_type=report_type,
                                                         start=start, end=end, sections=sections)]


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00 UTC, the day after last 00:00 UTC): a date range as report_date bounds."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    return start, end
