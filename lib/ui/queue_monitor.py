"""Queue Monitor: cached loaders, filters, tables and the retry actions for pages/queue_monitor.py.

Every session-state key of the page is a constant of `Keys` below (all start with "qm_").
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from lib.activity.worker_ticks import worker_health
from lib.core.export import build_export, frame_export
from lib.core.schema import ACTION_TYPES
from lib.core.text import clip, clip_json
from lib.core.timeutil import fmt_duration, fmt_local, utcnow
from lib.queue.holds import hold_reasons
from lib.queue.reads import (
    active_pauses,
    count_rows,
    error_groups,
    group_filter,
    iter_export_rows,
    matching_ids,
    queue_health,
    queue_rows,
    row_detail,
    search_sent,
    status_summary,
    stored_values,
    waiting_rows,
)
from lib.queue.rules import (
    ERROR_CATEGORIES,
    EXPORT_COLUMNS,
    GROUP_ROW_CAP,
    MAX_BULK_RETRY,
    SENT_SEARCH_CAP,
    SENT_SEARCH_MIN_CHARS,
    WAIT_KINDS,
    QueueControlError,
    QueueFilter,
    SentSearch,
    editable_fields,
    summary_matrix,
)
from lib.queue.store import discard, edit_and_retry, pause, resume, retry
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.charts import Fig, plain
from lib.ui.counts import count_metric
from lib.ui.export import export_control
from lib.ui.feedback import Confirmation, flash, guarded_write, refusal_message, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine
from lib.ui.text import ago, md_escape


class Keys:
    """The page's session-state keys (tests use these names too)."""
    SELECTED = "qm_selected_ids"  # ids of the selected rows (list of str): the table's selection is
    # positional, so it is turned into ids at once (on_select) and the table stops refreshing while
    # rows are selected
    SHOWN = "qm_shown"  # what the table shows: {tag, ids, rows}, to map positions and clicks to ids
    RESULTS = "qm_results"  # the last retry's results in the endpoint's response shape ({label, results})
    CONFIRM = "qm_confirm"  # the pending "retry all matching" confirmation ({filter, count, matching})
    FIND = "qm_find"  # the search by what was sent (in the URL: a found row can be shared)
    FIND_CLICK = "qm_find_open"  # the Open button column of its results
    OPEN = "qm_open_id"  # the row whose story the dialog shows (its "Open" button was clicked)
    TABLE_VER = "qm_table_ver"  # bumped after each retry: a fresh table widget, i.e. an empty selection
    VIEW, ACTION, CATEGORY, SEARCH, GROUP = "qm_view", "qm_action", "qm_category", "qm_search", "qm_group"
    FLASH = "queue_monitor"  # lib.ui.feedback's flash messages of this page
    COUNTS_TAB = "qm_counts_tab"  # the counts' Table | Chart tabs (lazy: the chart is drawn while its tab is open)

    @staticmethod
    def page(view: str) -> str:  # the table's page number (st.pagination)
        return f"qm_page_{view}"

    @staticmethod
    def click(view: str) -> str:  # the per-row Retry button column's click
        return f"qm_click_{view}"

    @staticmethod
    def open_click(view: str) -> str:  # the per-row Open button column's click
        return f"qm_open_click_{view}"


CONFIRM_ALL = Confirmation(Keys.CONFIRM)
PAGE_SIZE = 50
EXPORT_CAP = 50_000
VIEWS = {"dlq": "Dead-letter queue", "failed": "Failed · retry scheduled"}
ALL = "__all__"
STATUS_COLORS = {"pending": "#4c78a8", "processing": "#f2a93b", "sent": "#3f9c6d", "failed": "#e4572e",
                 "dlq": "#a31621"}


# -- cached loaders (db_url first; "now" is always a rounded argument) ------------------------------

@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_summary(db_url: str, account_id: uuid.UUID | None, now: datetime) -> dict[str, Any]:
    with get_engine(db_url).connect() as conn:
        return status_summary(conn, account_id=account_id, now=now)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_health(db_url: str, account_id: uuid.UUID | None, now: datetime, lease_s: int) -> dict[str, Any]:
    with get_engine(db_url).connect() as conn:
        return queue_health(conn, account_id=account_id, now=now, lease_s=lease_s)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_waiting(db_url: str, account_id: uuid.UUID | None, now: datetime) -> list[dict[str, Any]]:
    with get_engine(db_url).connect() as conn:
        return waiting_rows(conn, account_id=account_id, now=now)


def show_waiting(rows: list[dict[str, Any]], now: datetime, tz) -> None:
    """Rows that wait on Instagram rather than on a failure, with why and until when."""
    if not rows:
        return
    n = f"{len(rows)}{'+' if len(rows) >= 50 else ''} row{'' if len(rows) == 1 else 's'}"
    st.markdown(f"**Waiting on Instagram** · {n} (not failures: each moves on by itself)")
    frame = pd.DataFrame([{
        "action": r["action_type"],
        "waiting for": WAIT_KINDS.get(r["wait_kind"], r["wait_kind"]),
        "reason": clip(r["wait_reason"] or "", 200),
        "since": fmt_duration(r["waited_s"]) if r["waited_s"] is not None else "",
        "next check": ("now" if (r["due_in_s"] or 0) <= 0 else f"in {fmt_duration(r['due_in_s'])}"),
        "id": str(r["id"]),
    } for r in rows])
    st.dataframe(frame, hide_index=True, width="stretch")


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_worker(db_url: str, now: datetime, cron: str) -> dict[str, Any]:
    with get_engine(db_url).connect() as conn:
        return worker_health(conn, now=now, cron=cron)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_rows(db_url: str, filt: QueueFilter, page: int, page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """One page of rows, each with what holds it back (`held`: a short label, or None): a retry of a
    held row would not send it, and the table says so before anyone tries."""
    with get_engine(db_url).connect() as conn:
        rows = queue_rows(conn, filt=filt, limit=page_size, offset=(page - 1) * page_size)
        held = hold_reasons(conn, [r["id"] for r in rows], now=utcnow(), short=True)
    return [{**r, "held": held.get(r["id"])} for r in rows]


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_count(db_url: str, filt: QueueFilter) -> int:
    with get_engine(db_url).connect() as conn:
        return count_rows(conn, filt=filt)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_groups(db_url: str, filt: QueueFilter) -> list[dict[str, Any]]:
    with get_engine(db_url).connect() as conn:
        return error_groups(conn, filt=filt)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=16, show_spinner=False)
def load_group_filter(db_url: str, base: QueueFilter, category: str, group_text: str,
                      errors: tuple[str, ...]) -> tuple[QueueFilter, bool]:
    """The table's filter for one error group: bounded whatever the group's size (lib.queue.reads.group_filter)."""
    with get_engine(db_url).connect() as conn:
        return group_filter(conn, base, error_category=category, error_group=group_text, errors=errors)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_detail(db_url: str, queue_id: str) -> dict[str, Any] | None:
    with get_engine(db_url).connect() as conn:
        d = row_detail(conn, uuid.UUID(queue_id))
        if d is None:
            return None
        d["held"] = hold_reasons(conn, [d["id"]], now=utcnow()).get(d["id"])
    d["payload"] = clip_json(d["payload"])  # a payload may be megabytes: cache and render a bounded copy
    return d


def clear_caches() -> None:
    """After a write: the next run reads fresh data everywhere on the page."""
    for fn in (load_summary, load_health, load_waiting, load_rows, load_count, load_groups, load_group_filter,
               load_detail, load_pauses, load_sent_search):
        fn.clear()


# -- worker + counts --------------------------------------------------------------------------------

def show_worker(health: dict[str, Any], now: datetime, tz) -> None:
    if health.get("never_ran"):
        st.warning("The worker has never run against this database: nothing is being sent or retried. "
                   "Start it with `python -m worker`.", icon=":material/engineering:")
        return
    started = health["last_started_at"]
    line = f"Worker: last tick {ago(started)} ({fmt_local(started, tz)})"
    if health.get("running"):
        line += " · running now"
    else:
        line += (f" · claimed {health.get('claimed') or 0}, sent {health.get('sent') or 0}, "
                 f"failed {health.get('failed') or 0}, dead-lettered {health.get('dlq') or 0}")
    if health.get("missed"):
        st.warning(f"{line}. The worker missed its schedule (two or more ticks did not happen): "
                   "check that `python -m worker` is running.", icon=":material/schedule:")
    else:
        st.caption(line)  # our own text: times and counts
    if health.get("last_error"):
        st.error("The worker's last tick failed:", icon=":material/error:")
        st.code(clip(health["last_error"], 2_000), language=None, wrap_lines=True)


def counts_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Action types x statuses with totals, from status_summary()."""
    actions, statuses, cells = summary_matrix(summary["summary"])
    rows = [{"action_type": a, **{s: cells.get((a, s), 0) for s in statuses}} for a in actions]
    df = pd.DataFrame(rows, columns=["action_type", *statuses])
    df["total"] = df[statuses].sum(axis=1)
    totals = {"action_type": "total", **{c: int(df[c].sum()) for c in [*statuses, "total"]}}
    return pd.concat([df, pd.DataFrame([totals])], ignore_index=True)


def status_totals(summary: dict[str, Any]) -> dict[str, int]:
    """Rows per status over all action types, from status_summary() (the Overview reads it too)."""
    by_status: dict[str, int] = {}
    for (_, status), n in summary_matrix(summary["summary"])[2].items():
        by_status[status] = by_status.get(status, 0) + n
    return by_status


def show_metrics(summary: dict[str, Any], health: dict[str, Any]) -> None:
    by_status = status_totals(summary)
    oldest = health["oldest_pending_age_s"]
    # a flex row, not seven equal columns: each card is as wide as its value ("9 h 59 min",
    # "200,000") and the row wraps when the window is narrow, so no value is cut to "1 h …"
    with st.container(horizontal=True, key="qm_metrics"):
        st.metric("Total", f"{summary['total']:,}", border=True)
        st.metric("Pending", f"{by_status.get('pending', 0):,}", border=True)
        held = health.get("held_back") or 0
        st.metric("Due", f"{health['due_now']:,}", border=True,
                  delta=f"{held:,} held back" if held else None, delta_color="off",
                  help="What the next tick takes: pending and failed rows whose time has come, of accounts "
                       "that are connected and not throttled by Instagram (the worker's own rule). "
                       "Held back: due rows of disconnected or throttled accounts.")
        st.metric("Oldest", "—" if oldest is None else fmt_duration(oldest), border=True,
                  help="How long the oldest pending row has waited.")
        st.metric("Processing", f"{by_status.get('processing', 0):,}", border=True,
                  delta=f"{health['stuck']} stuck" if health["stuck"] else None, delta_color="inverse")
        st.metric("Failed", f"{by_status.get('failed', 0):,}", border=True, help="Retry scheduled by the worker.")
        count_metric("DLQ", by_status.get("dlq", 0), colour="red", note="needs an operator", border=True,
                     help="Dead-letter queue: needs an operator.")
    if health["stuck"]:
        lease = fmt_duration(health["lease_s"])
        st.warning(f"{health['stuck']} row(s) have been in processing for longer than the {lease} lease: "
                   "a worker probably died while holding them. The next tick takes them back as failed "
                   "attempts; if that does not happen, the worker is not running.", icon=":material/hourglass_bottom:")


def sent_note(summary: dict[str, Any], tz) -> str:
    """How fresh the `sent` column is: the live windows, and the rollup's "as of" time."""
    line = f"Sent in the last 24 h: {summary.get('sent_24h', 0):,}; in 7 days: {summary.get('sent_7d', 0):,} (live)."
    if summary.get("sent_as_of") is None:
        return line + " All-time sent: counted live (the worker has not built its rollup yet)."
    return (line + f" All-time sent: live since {fmt_local(summary['sent_exact_since'], tz, with_seconds=False)}, "
            f"earlier days as of the worker's rollup at {fmt_local(summary['sent_as_of'], tz)}.")


def show_counts(summary: dict[str, Any], scope: Scope) -> None:
    if not summary["total"]:
        st.info("The queue is empty" + (" for this account" if scope.account_id else "") +
                ". Rows appear here when the agents enqueue Instagram actions (post_queue).",
                icon=":material/inbox:")
        return
    df = counts_frame(summary)
    # the chart shows the table's numbers again: a lazy tab, so opening the page draws no Plotly chart
    # (its first chart was the largest single cost of the page in the browser)
    table_tab, chart_tab = st.tabs(["Table", "Chart"], key=Keys.COUNTS_TAB, on_change="rerun")
    with table_tab:
        st.dataframe(df, hide_index=True, width="stretch", key="qm_counts",
                     column_config={"action_type": st.column_config.TextColumn("Action type", pinned=True)})
        with st.columns([2, 3])[0]:  # the picker and its button at their size, not spread over the tab
            export_control("Counts", lambda fmt: frame_export(df, fmt), file_stem="queue_counts", key="qm_counts_csv")
        st.caption(sent_note(summary, scope.tz))  # our own text: counts and times
    if chart_tab.open:
        with chart_tab:
            st.plotly_chart(counts_chart(df).to_dict(), width="stretch", key="qm_counts_chart", theme="streamlit")


def counts_chart(df: pd.DataFrame) -> Fig:
    """Rows per action type, stacked by status (the counts table without its total row)."""
    body = df[df["action_type"] != "total"]
    fig = Fig()
    for status in [c for c in df.columns if c not in ("action_type", "total")]:
        if body[status].sum():
            fig.add(dict(type="bar", name=plain(status), x=[plain(a) for a in body["action_type"]], y=body[status].to_numpy(),
                         marker=dict(color=STATUS_COLORS.get(status))))
    fig.layout_fig.update_layout(barmode="stack", height=300, margin=dict(l=0, r=0, t=10, b=0),
                                 legend=dict(orientation="h", y=-0.15), yaxis_title="rows")
    return fig


# -- filters ------------------------------------------------------------------------------------

def view_picker() -> str:
    return st.segmented_control("Rows", list(VIEWS), format_func=VIEWS.get, default="dlq", required=True,
                                key=Keys.VIEW, bind="query-params") or "dlq"


def group_key(g: dict[str, Any]) -> str:
    return f"{g['error_category']}|{g['error_group']}"


def filters(scope: Scope, view: str) -> tuple[QueueFilter, QueueFilter]:
    """The filter row (state in the URL), then the error-group picker.

    -> (the table's filter, the same without the error group: what the group list is about)."""
    c1, c2, c3 = st.columns([1, 1, 2])
    action = c1.selectbox("Action type", [ALL, *ACTION_TYPES], format_func=lambda v: "All" if v == ALL else v,
                          key=Keys.ACTION, bind="query-params")
    category = c2.selectbox("Error category", [ALL, *ERROR_CATEGORIES, "(none)"],
                            format_func=lambda v: "All" if v == ALL else v, key=Keys.CATEGORY, bind="query-params")
    search = c3.text_input("Search error text", key=Keys.SEARCH, bind="query-params",
                           placeholder="e.g. token, 190, rate limit")
    base = QueueFilter(status=view, account_id=scope.account_id, action_type=None if action == ALL else action,
                       error_category=None if category == ALL else category, search=(search or "").strip() or None)
    groups = load_groups(scope.db_url, base)
    by_key = {group_key(g): g for g in groups}
    # Streamlit's selectbox travels as its label, and our labels carry counts. Read before the widget,
    # the state is still decoded with the labels the browser was shown, so this is the group key the
    # operator chose; handing it back every run makes the browser hold today's label (with today's
    # count). Without that, a label whose count changed is one the next run cannot decode: choice lost.
    chosen = st.session_state.get(Keys.GROUP)
    if chosen is None or (chosen != ALL and "|" not in chosen):  # nothing chosen yet, or undecodable
        chosen = ALL
    options = [ALL, *by_key]
    if chosen != ALL and chosen not in by_key:  # keep the operator's choice even when it has emptied out
        options.insert(1, chosen)
    st.session_state[Keys.GROUP] = chosen
    choice = st.selectbox(
        "Error group", options, key=Keys.GROUP,
        format_func=lambda k: f"All errors ({sum(g['count'] for g in groups):,} rows)" if k == ALL
        else f"{by_key[k]['count']:,} × {by_key[k]['error_category']} · {by_key[k]['error_group']}" if k in by_key
        else f"0 × {k.replace('|', ' · ', 1)}",
    )
    group = by_key.get(choice) if choice != ALL else None
    if choice not in (ALL, None) and group is None:
        group = {"error_category": choice.split("|", 1)[0], "error_group": choice.split("|", 1)[1], "count": 0,
                 "errors": ()}
    if group is not None:
        narrowed, capped = load_group_filter(scope.db_url, base, group["error_category"], group["error_group"],
                                             tuple(group["errors"]))
        if capped:
            st.caption(f"This error group has more than {GROUP_ROW_CAP:,} rows: the table, the export and "
                       f"“retry all matching” cover its first {GROUP_ROW_CAP:,} (table order).")
        return narrowed, base
    return base, base


def show_groups(groups: list[dict[str, Any]], view: str) -> None:
    if not groups:
        return
    top = pd.DataFrame([{"rows": g["count"], "category": g["error_category"], "error": g["error_group"]}
                        for g in groups[:8]])
    more = len(groups) - len(top)
    also = f" ({more} more groups in the picker above)" if more > 0 else ""
    st.caption(f"Most common errors in the {VIEWS[view].lower()}{also}. Numbers and ids inside the texts are merged; "
               "pick a group above to see and retry just those rows.")
    st.dataframe(top, hide_index=True, width="stretch", key=f"qm_groups_{view}",
                 column_config={"rows": st.column_config.NumberColumn("Rows", width=70),
                                "category": st.column_config.TextColumn("Category", width=120),
                                "error": st.column_config.TextColumn("Error (normalised)", width="large")})


# -- the table, the selection and the retry ---------------------------------------------------------

def _filter_tag(filt: QueueFilter, page: int) -> str:
    raw = repr((filt.status, str(filt.account_id), filt.action_type, filt.error_category, filt.search,
                filt.errors, filt.ids, page))
    return hashlib.sha1(raw.encode()).hexdigest()[:10]


def _selected_ids() -> list[str]:
    return list(st.session_state.get(Keys.SELECTED) or [])


def _on_select(table_key: str) -> None:
    shown = st.session_state.get(Keys.SHOWN) or {}
    ids = shown.get("ids", [])
    rows = st.session_state[table_key].selection.rows
    st.session_state[Keys.SELECTED] = [ids[i] for i in rows if i < len(ids)]


def clear_selection() -> None:
    st.session_state[Keys.SELECTED] = []
    st.session_state.pop(Keys.OPEN, None)  # the row changed or went: its dialog closes
    st.session_state[Keys.TABLE_VER] = st.session_state.get(Keys.TABLE_VER, 0) + 1


def run_retry(scope: Scope, ids: list, label: str) -> None:
    """The one write of this page: lib.queue.store.retry for one, selected or all matching rows."""
    results = guarded_write(Keys.FLASH, label, scope.engine,
                            lambda conn: retry(conn, ids, actor=current_actor(scope.settings), now=utcnow()))
    if results is None:  # refused: the flash says why, nothing changed
        return
    held = [r for r in results if r.success and r.held]
    warned = [r for r in results if r.success and not r.held and "will fail the same way" in r.message]
    st.session_state[Keys.RESULTS] = {
        "label": label, "verb": "moved back to pending; the worker picks them up on its next tick"
        if not held else f"moved back to pending; {len(held)} of them wait: {held[0].held}",
        "warnings": [r.message for r in (held + warned)[:5]],
        "results": [r.as_response() for r in results]}
    clear_selection()
    clear_caches()


def run_discard(scope: Scope, ids: list, label: str) -> None:
    """Delete failed/dlq rows (lib.queue.store.discard): each row's columns go to audit_log first."""
    results = guarded_write(Keys.FLASH, label, scope.engine,
                            lambda conn: discard(conn, ids, actor=current_actor(scope.settings), now=utcnow()))
    if results is None:
        return
    st.session_state[Keys.RESULTS] = {"label": label, "verb": "discarded (each kept whole in the audit log)",
                                      "results": [dataclasses.asdict(r) for r in results]}
    clear_selection()
    clear_caches()


def _dismiss_results() -> None:
    st.session_state.pop(Keys.RESULTS, None)


def show_results() -> None:
    show_flash(Keys.FLASH)
    last = st.session_state.get(Keys.RESULTS)
    if not last:
        return
    results = last["results"]
    ok = sum(r["success"] for r in results)
    refused = len(results) - ok
    noun = "row" if ok == 1 else "rows"
    if ok:
        st.success(f"{last['label']}: {ok} {noun} {md_escape(last.get('verb', 'changed'))}.", icon=":material/task_alt:")
    for text in last.get("warnings", []):
        st.warning(md_escape(text), icon=":material/hourglass_top:")
    if refused:
        st.warning(f"{last['label']}: {refused} row(s) were not changed (see the messages below).",
                   icon=":material/block:")
    with st.expander(f"Results ({len(results)})", expanded=bool(refused) and len(results) <= 20):
        st.dataframe(pd.DataFrame(results), hide_index=True, width="stretch", key="qm_results_df")
    st.button("Dismiss", key="qm_dismiss", on_click=_dismiss_results, type="tertiary", icon=":material/close:")


def _frame(rows: list[dict[str, Any]], scope: Scope, view: str, now: datetime) -> pd.DataFrame:
    waits = any(r.get("held") for r in rows)  # the column only when a row on this page is held back
    return pd.DataFrame(
        [{
            "retry": "Retry now" if view == "failed" else "Retry",
            "open": "Open",
            "action_type": r["action_type"],
            "account": scope.account_name(r["business_account_id"]),
            **({"held": r.get("held") or ""} if waits else {}),
            "error_category": r["error_category"] or "—",
            "error": clip(r["error"] or "", 1_000),
            "retry_count": r["retry_count"],
            **({"next_retry": ago(r["next_retry_at"])} if view == "failed" else {}),
            "created": r["created_at"].astimezone(scope.tz).strftime("%m-%d %H:%M") if r["created_at"] else "—",
            "last_attempt": ago(r["updated_at"]),
            "id": str(r["id"]),
        } for r in rows],
        columns=["retry", "open", "action_type", "account", *(["held"] if waits else []), "error_category", "error",
                 "retry_count",
                 *(["next_retry"] if view == "failed" else []), "last_attempt", "created", "id"],
    )


def show_table(scope: Scope, view: str, filt: QueueFilter) -> None:
    """Results, the paginated table, the action bar and the selected row's detail (a live panel)."""
    now = utcnow()
    show_results()
    total = load_count(scope.db_url, filt)
    if total == 0:
        _show_no_rows(view, filt)
        return
    page, pages = _current_page(view, total)
    tag = _filter_tag(filt, page)
    _retry_clicked_row(scope, view, tag)
    _open_clicked_row(view, tag)
    rows, selected, frozen = _rows_on_screen(scope, filt, page, tag)
    _draw_rows(scope, view, tag, rows, now)
    _draw_pager(view, page, pages, total, len(rows), len(selected) if frozen else 0)
    _draw_actions(scope, view, filt, total, selected)
    if len(selected) == 1 and not st.session_state.get(Keys.OPEN):  # (the dialog draws the same widgets)
        show_detail(scope, selected[0], now)
    elif not selected:
        st.caption("“Open” shows a row's error, every attempt, its payload and its actions; "
                   "tick rows to retry or discard them together.")


def _show_no_rows(view: str, filt: QueueFilter) -> None:
    if filt == QueueFilter(status=view, account_id=filt.account_id):
        msg = ("The dead-letter queue is empty: nothing needs an operator." if view == "dlq" else
               "No failed rows are waiting for a retry.")
        st.success(msg, icon=":material/check_circle:")
    else:
        st.info("No rows match these filters. Clear the search or pick “All” to widen them.",
                icon=":material/filter_alt_off:")
    st.session_state[Keys.SELECTED] = []


def _current_page(view: str, total: int) -> tuple[int, int]:
    """(page shown, number of pages); a page past the end (rows went away) goes back to 1."""
    pages = max(1, -(-total // PAGE_SIZE))
    if st.session_state.get(Keys.page(view), 1) > pages:
        st.session_state[Keys.page(view)] = 1
    return st.session_state.get(Keys.page(view), 1), pages


def _retry_clicked_row(scope: Scope, view: str, tag: str) -> None:
    """A click in the Retry column retries the row the operator saw in that position."""
    shown = st.session_state.get(Keys.SHOWN) or {}
    click = st.session_state.get(Keys.click(view)) if scope.user.is_operator else None
    if click is not None and shown.get("tag") == tag and click["row"] < len(shown.get("ids", [])):
        run_retry(scope, [shown["ids"][click["row"]]], "Retry")
        st.rerun()


def _open_clicked_row(view: str, tag: str) -> None:
    """A click in the Open column opens that row's story in a dialog. The dialog is drawn by the
    main script (row_dialog), never inside this ticking panel, hence the app rerun."""
    shown = st.session_state.get(Keys.SHOWN) or {}
    click = st.session_state.get(Keys.open_click(view))
    if click is not None and shown.get("tag") == tag and click["row"] < len(shown.get("ids", [])):
        st.session_state[Keys.OPEN] = shown["ids"][click["row"]]
        st.rerun()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_sent_search(db_url: str, text: str, account_id: uuid.UUID | None) -> SentSearch:
    with get_engine(db_url).connect() as conn:
        return search_sent(conn, text, account_id=account_id)


def find_sent(scope: Scope) -> None:
    """Find rows of any status by what was sent: a recipient, comment or conversation id, or words of
    the text. Nothing is queried until something is typed; "Open" shows the row's story."""
    text = st.text_input("Find a row by what was sent", key=Keys.FIND, bind="query-params", max_chars=200,
                         icon=":material/search:",
                         placeholder="recipient id, comment id, conversation id or words of the message",
                         help="Searches the payload of every row, whatever its status (sent ones too).").strip()
    if not text:
        return
    if len(text) < SENT_SEARCH_MIN_CHARS:
        st.caption(f"Type at least {SENT_SEARCH_MIN_CHARS} characters.")
        return
    result = load_sent_search(scope.db_url, text, scope.account_id)
    if not result.rows:
        st.info(f"No row{' of ' + md_escape(scope.account_name(scope.account_id)) if scope.account_id else ''} "
                f"has “{md_escape(text)}” in what it sends.", icon=":material/search_off:")
        return
    click = st.session_state.get(Keys.FIND_CLICK)
    if click is not None and click["row"] < len(result.rows):
        st.session_state[Keys.OPEN] = str(result.rows[click["row"]]["id"])  # row_dialog opens it in this run
    frame = pd.DataFrame([{
        "open": "Open", "status": r["status"], "action_type": r["action_type"],
        "account": scope.account_name(r["business_account_id"]),
        "payload": clip(json.dumps(r["payload"], ensure_ascii=False, sort_keys=True, default=str), 300),
        "created": fmt_local(r["created_at"], scope.tz, with_seconds=False), "last_change": ago(r["updated_at"]),
    } for r in result.rows])
    st.container(key="qm_find_results").dataframe(frame, hide_index=True, width="stretch", key="qm_find_table", column_config={
        "open": st.column_config.ButtonColumn("", key=Keys.FIND_CLICK, type="tertiary", width=56,
                                              help="Error, attempts, payload and actions of this row"),
        "status": st.column_config.TextColumn("Status", width=80),
        "action_type": st.column_config.TextColumn("Action type", width=105),
        "account": st.column_config.TextColumn("Account", width=135),
        "payload": st.column_config.TextColumn("Payload", width=380),
        "created": st.column_config.TextColumn("Created", width=140),
        "last_change": st.column_config.TextColumn("Last change", width=100),
    })
    n = len(result.rows)
    st.caption(f"More than {SENT_SEARCH_CAP} rows contain it: the newest {n} of the first {SENT_SEARCH_CAP} found "
               "are listed. Type more of an id to narrow it." if result.more else
               f"{n} row{'s' if n != 1 else ''}, newest first.")


def row_dialog(scope: Scope) -> None:
    """The opened row's story: error, facts, every attempt, payload, history and its actions."""
    queue_id = st.session_state.get(Keys.OPEN)
    if not queue_id or CONFIRM_ALL.pending:
        return

    @st.dialog("Queue row", width="large", on_dismiss=lambda: st.session_state.pop(Keys.OPEN, None))
    def dialog():
        show_detail(scope, queue_id, utcnow())

    dialog()


def _rows_on_screen(scope: Scope, filt: QueueFilter, page: int, tag: str) -> tuple[list[dict], list[str], bool]:
    """(rows to show, selected ids, frozen). While rows are selected the table keeps the rows the
    operator selected on (a refresh must never move a checkbox onto another row)."""
    shown = st.session_state.get(Keys.SHOWN) or {}
    selected = _selected_ids()
    if shown.get("tag") != tag:
        selected = st.session_state[Keys.SELECTED] = []  # other rows on screen: a new selection
    frozen = bool(selected) and shown.get("tag") == tag
    rows = shown["rows"] if frozen else load_rows(scope.db_url, filt, page)
    st.session_state[Keys.SHOWN] = {"tag": tag, "ids": [str(r["id"]) for r in rows], "rows": rows}
    return rows, selected, frozen


def _draw_rows(scope: Scope, view: str, tag: str, rows: list[dict], now: datetime) -> None:
    df = _frame(rows, scope, view, now)
    table_key = f"qm_table_{view}_{tag}_{st.session_state.get(Keys.TABLE_VER, 0)}"
    st.dataframe(
        df, hide_index=True, width="stretch", key=table_key, on_select=lambda: _on_select(table_key),
        selection_mode="multi-row",
        column_order=[c for c in df.columns if c != "id"],
        column_config={
            "retry": (st.column_config.ButtonColumn("", key=Keys.click(view), type="tertiary", width=64,
                                                    help="Move this row back to pending")
                      if scope.user.is_operator else None),
            "open": st.column_config.ButtonColumn("", key=Keys.open_click(view), type="tertiary", width=56,
                                                  help="Error, attempts, payload and actions of this row"),
            # widths that keep every column on screen at 1440 px (the full error is one click away: Open)
            "action_type": st.column_config.TextColumn("Action type", width=105),
            "account": st.column_config.TextColumn("Account", width=135),
            "held": st.column_config.TextColumn("Waits for", width=85, help="The worker leaves this row alone until "
                                                "then (Open says why); a retry waits for it too"),
            "error_category": st.column_config.TextColumn("Category", width=95),
            "error": st.column_config.TextColumn("Error", width=150 if "held" in df.columns else 225),
            "retry_count": st.column_config.NumberColumn("Retries", width=60),
            "next_retry": st.column_config.TextColumn("Next retry", width=90),
            "created": st.column_config.TextColumn("Created", width=95, help=f"Month-day and time, {scope.tz.key}"),
            "last_attempt": st.column_config.TextColumn("Last attempt", width=95),
        },
    )


def _draw_pager(view: str, page: int, pages: int, total: int, n_rows: int, frozen_selected: int) -> None:
    first = (page - 1) * PAGE_SIZE + 1
    order = "newest attempt first" if view == "dlq" else "next retry first"
    info = f"Rows {first:,}–{first + n_rows - 1:,} of {total:,}, {order}"
    if frozen_selected:
        info += f" · refresh paused while {frozen_selected} row(s) are selected"
    nav, status_line = st.columns([2, 3], vertical_alignment="center")
    with nav:
        if pages > 1:
            st.pagination(pages, key=Keys.page(view), max_visible_pages=7)
    status_line.caption(info)


def _draw_actions(scope: Scope, view: str, filt: QueueFilter, total: int, selected: list[str]) -> None:
    """Retry selected, retry all matching (confirmed in a dialog), clear selection, CSV."""
    can_write = scope.user.is_operator
    why_not = None if can_write else OPERATORS_ONLY
    n_match = min(total, MAX_BULK_RETRY)
    a, b, c, d = st.columns([1.2, 1.6, 1, 1.2], vertical_alignment="center")
    if a.button(f"Retry {len(selected)} selected" if selected else "Retry selected", key="qm_retry_selected",
                disabled=not selected or not can_write, help=why_not or "Select rows with the checkboxes on the left",
                icon=":material/replay:", type="primary" if selected else "secondary"):
        run_retry(scope, selected, f"Retry selected ({len(selected)})")
        st.rerun()
    label = f"Retry all {total:,} matching" if total <= MAX_BULK_RETRY else f"Retry first {n_match:,} of {total:,} matching"
    if b.button(label, key="qm_retry_all", disabled=not can_write, help=why_not or
                f"Asks for confirmation first; at most {MAX_BULK_RETRY:,} rows per click, in table order.",
                icon=":material/done_all:"):
        CONFIRM_ALL.ask({"filter": filt, "count": n_match, "matching": total})
        st.rerun()  # the dialog opens outside this live panel (streamlit#17011)
    # always drawn (disabled when idle): a stable layout keeps the live panel's reruns clean
    c.button("Clear selection", key="qm_clear", on_click=clear_selection, icon=":material/deselect:",
             disabled=not selected)
    e, f, _ = st.columns([1.2, 1.6, 2.2], vertical_alignment="center")
    if e.button(f"Discard {len(selected)} selected" if selected else "Discard selected", key="qm_discard_selected",
                disabled=not selected or not can_write, icon=":material/delete:",
                help=why_not or "Deletes the rows after keeping each one whole in the audit log; asks first."):
        CONFIRM_ALL.ask({"action": "discard", "ids": list(selected), "count": len(selected), "matching": len(selected),
                         "filter": filt})
        st.rerun()
    if f.button(f"Discard all {n_match:,} matching", key="qm_discard_all", disabled=not can_write or not total,
                icon=":material/delete_sweep:",
                help=why_not or f"Asks for confirmation first; at most {MAX_BULK_RETRY:,} rows per click."):
        CONFIRM_ALL.ask({"action": "discard", "filter": filt, "count": n_match, "matching": total})
        st.rerun()
    with d:
        db_url = scope.db_url
        export_control("Export", lambda fmt: export_file(db_url, filt, fmt), file_stem=f"post_queue_{view}",
                     key=f"qm_export_{view}", help=f"All rows matching the filters (up to {EXPORT_CAP:,}); built when clicked.")


def export_file(db_url: str, filt: QueueFilter, fmt: str = "csv") -> bytes:
    with get_engine(db_url).connect() as conn:
        data, _, _ = build_export(fmt, EXPORT_COLUMNS, iter_export_rows(conn, filt=filt), cap=EXPORT_CAP)
    return data


def show_detail(scope: Scope, queue_id: str, now: datetime) -> None:
    d = load_detail(scope.db_url, queue_id)
    with st.container(border=True, key="qm_detail"):
        if d is None:
            st.info("This row no longer exists.")
            return
        head, action = st.columns([4, 1], vertical_alignment="center")
        head.markdown(f"**{md_escape(d['action_type'])}** · `{d['id']}`")
        if action.button("Retry this row", key="qm_retry_one", icon=":material/replay:", type="primary",
                         disabled=not scope.user.is_operator or d["status"] not in ("failed", "dlq"),
                         help=None if scope.user.is_operator else OPERATORS_ONLY):
            run_retry(scope, [d["id"]], "Retry")
            st.rerun()
        if action.button("Discard this row", key="qm_discard_one", icon=":material/delete:",
                         disabled=not scope.user.is_operator or d["status"] not in ("failed", "dlq"),
                         help=None if scope.user.is_operator else OPERATORS_ONLY):
            CONFIRM_ALL.ask({"action": "discard", "ids": [d["id"]], "count": 1, "matching": 1,
                             "filter": QueueFilter(d["status"] if d["status"] in VIEWS else "dlq")})
            st.session_state.pop(Keys.OPEN, None)  # one dialog at a time: the confirmation replaces it
            st.rerun()
        facts = {
            "Status": d["status"], "Account": scope.account_name(d["business_account_id"]),
            "Error category": d["error_category"] or "—", "Retries": d["retry_count"],
            "Created": fmt_local(d["created_at"], scope.tz), "Last attempt": fmt_local(d["updated_at"], scope.tz),
            "Next retry": fmt_local(d["next_retry_at"], scope.tz)
            + (f" ({ago(d['next_retry_at'])})" if d["next_retry_at"] else ""),
            "Instagram id": d.get("instagram_id") or "—",
        }
        st.dataframe(pd.DataFrame([{k: str(v) for k, v in facts.items()}]), hide_index=True,
                     width="stretch", key="qm_detail_facts")
        if d.get("held"):
            st.warning(f"Held back: {md_escape(d['held'])}. A retry moves it to pending, but the worker sends it "
                       "only once that ends.", icon=":material/hourglass_top:")
        st.markdown("**Error**")
        st.code(clip(d["error"]) or "(no error text)", language=None, wrap_lines=True)
        show_edit_form(scope, d)
        left, right = st.columns(2)
        with left:
            st.markdown("**Payload** (token-like fields redacted)")
            st.json(d["payload"] if d["payload"] is not None else {}, expanded=True)
        with right:
            st.markdown("**Attempts** (newest first)")
            if not d.get("attempts"):
                st.caption("The worker has not attempted this row yet.")
            else:
                st.dataframe(pd.DataFrame([{
                    "when": fmt_local(a["attempted_at"], scope.tz), "outcome": a["outcome"],
                    "category": a["error_category"] or "", "retries": a["retry_count"],
                    "error": clip(a["error"] or "", 1_000),
                } for a in d["attempts"]]), hide_index=True, width="stretch", key="qm_detail_attempts")
            st.markdown("**History** (audit_log)")
            if not d["history"]:
                st.caption("No audit_log rows mention this queue row.")
            else:
                hist = pd.DataFrame([{
                    "when": fmt_local(h["created_at"], scope.tz), "event": h["event_type"], "by": h["user_id"] or "worker",
                    "success": h["success"], "error": clip(h["error_message"] or "", 1_000),
                    "previous": (f"{h['details'].get('previous_status')} · {h['details'].get('previous_retry_count')} retries"
                                 if isinstance(h["details"], dict) and "previous_status" in h["details"] else ""),
                } for h in d["history"]])
                st.dataframe(hist, hide_index=True, width="stretch", key="qm_detail_history")


def confirm_retry_all(scope: Scope) -> None:
    """Opened from the main script (never inside the ticking panel) when a confirmation is pending:
    retry all matching, or discard selected / all matching; the count is stated before anything runs."""
    pending = CONFIRM_ALL.pending
    if not pending:
        return
    discarding = pending.get("action") == "discard"

    @st.dialog("Discard rows" if discarding else "Retry all matching rows", on_dismiss=CONFIRM_ALL.cancel)
    def dialog():
        filt: QueueFilter = pending["filter"]
        n, total = pending["count"], pending["matching"]
        what = VIEWS[filt.status].lower()
        if discarding:
            st.markdown(f"Delete **{n:,}** row(s) of the {md_escape(what)}?")
            st.caption("Each row is first written whole (every column, tokens redacted) to one audit_log row "
                       "(queue_item_discarded) under your name, so it can be read back. Rows the worker holds or "
                       "that are not failed/dlq are reported, not touched.")
        else:
            st.markdown(f"Move **{n:,}** row(s) of the {md_escape(what)} back to **pending**?")
            st.caption("Each row restarts with retry_count 0; rows the worker holds or that are already pending are "
                       "reported, not changed. Every change is written to audit_log under your name.")
        if total > n:
            st.caption(f"{total:,} rows match; one click acts on at most {MAX_BULK_RETRY:,} (the first in table order).")
        ok, no = st.columns(2)
        verb = "Discard" if discarding else "Retry"
        if ok.button(f"{verb} {n:,} rows", type="primary", key="qm_confirm_ok",
                     icon=":material/delete:" if discarding else ":material/replay:"):
            ids = pending.get("ids")
            if ids is None:
                with scope.engine.connect() as conn:
                    ids = matching_ids(conn, filt=filt, limit=n)
            label = f"{verb} {'selected' if pending.get('ids') is not None else 'all matching'} ({len(ids):,})"
            (run_discard if discarding else run_retry)(scope, ids, label)
            CONFIRM_ALL.cancel()
            st.rerun()
        if no.button("Cancel", key="qm_confirm_cancel"):
            CONFIRM_ALL.cancel()
            st.rerun()

    dialog()


# -- edit and retry ------------------------------------------------------------------------------

def show_edit_form(scope: Scope, d: dict[str, Any]) -> None:
    """A form for the row's text fields, filled from the stored values (never the clipped, redacted
    copy shown beside it): lib.queue.store.edit_and_retry validates, refuses display marks and
    audits. Only operators get the stored values; a viewer sees the form disabled and empty."""
    fields = editable_fields(d["action_type"])
    if not fields or d["status"] not in ("failed", "dlq"):
        return
    can = scope.user.is_operator
    stored: dict[str, str] = {}
    if can:
        with scope.engine.connect() as conn:
            stored = stored_values(conn, uuid.UUID(str(d["id"]))) or {}
    with st.expander("Edit and retry", icon=":material/edit:"):
        if not can:
            st.caption(OPERATORS_ONLY)
        with st.form(f"qm_edit_{d['id']}", border=False):
            values = {}
            for name in fields:
                text = stored.get(name, "")
                if name.endswith("_url"):
                    values[name] = st.text_input(name, value=text, disabled=not can)
                else:  # the whole text, however long: the area grows with its content
                    values[name] = st.text_area(name, value=text, disabled=not can, height="content")
            st.caption("The stored text, whole. Checked before saving: the spec's keys and Instagram's limits "
                       "(caption 2,200 characters, 30 hashtags, 20 @ tags; DM text 1,000 bytes; http(s) media "
                       "URLs). On a post, any change makes a new media container, so what publishes is what you "
                       "saved. The change is audited; the row goes back to pending.")
            if st.form_submit_button("Save and retry", type="primary", disabled=not can,
                                     help=None if can else OPERATORS_ONLY):
                changes = {k: v for k, v in values.items() if v != stored.get(k, "")}
                try:
                    with scope.engine.begin() as conn:
                        res = edit_and_retry(conn, d["id"], changes, actor=current_actor(scope.settings), now=utcnow())
                except QueueControlError as exc:
                    st.error(f"Not saved: {md_escape(exc)}", icon=":material/error:")
                    return
                except Exception as exc:  # noqa: BLE001 - PermissionDenied / a busy database: say so, keep the form
                    st.error(f"Not saved: {refusal_message(exc)}", icon=":material/error:")
                    return
                flash(Keys.FLASH, "success", md_escape(res.message))
                clear_selection()
                clear_caches()
                st.rerun()


# -- pauses ----------------------------------------------------------------------------------------

@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_pauses(db_url: str, account_id: uuid.UUID | None, now: datetime):
    with get_engine(db_url).connect() as conn:
        return active_pauses(conn, now=now, account_id=account_id)


def _pause_label(p, scope: Scope) -> str:
    what = p.action_type or "every action type"
    who = "every account" if p.business_account_id is None else scope.account_name(p.business_account_id)
    return f"{what} of {who}"


def _on_resume(scope: Scope, pause_id) -> None:
    guarded_write(Keys.FLASH, "Resume", scope.engine,
                  lambda conn: resume(conn, pause_id, actor=current_actor(scope.settings), now=utcnow()))
    load_pauses.clear()
    clear_caches()


def show_pauses(scope: Scope, now: datetime, *, controls: bool = True) -> None:
    """What is paused, by whom, since when, how many due rows wait behind it; Resume for operators."""
    pauses = load_pauses(scope.db_url, scope.account_id, now)
    for p in pauses:
        note = f" — “{md_escape(clip(p.reason, 200))}”" if p.reason else ""
        row = st.columns([5, 1], vertical_alignment="center") if controls else [st.container()]
        row[0].warning(f"Paused: {md_escape(_pause_label(p, scope))}, by {md_escape(p.paused_by)} "
                       f"{ago(p.paused_at)}{note} · {p.waiting:,} due rows wait", icon=":material/pause_circle:")
        if controls:
            row[1].button("Resume", key=f"qm_resume_{p.id}", on_click=_on_resume, args=(scope, p.id),
                          disabled=not scope.user.is_operator, icon=":material/play_arrow:",
                          help=None if scope.user.is_operator else OPERATORS_ONLY)


def _on_pause(scope: Scope) -> None:
    action = st.session_state.get("qm_pause_action")
    reason = st.session_state.get("qm_pause_reason") or None
    done = guarded_write(Keys.FLASH, "Pause", scope.engine, lambda conn: pause(
        conn, actor=current_actor(scope.settings), now=utcnow(), business_account_id=scope.account_id,
        action_type=None if action in (None, ALL) else action, reason=reason))
    if done is not None:
        flash(Keys.FLASH, "success", "Paused: the worker claims none of these rows until you resume.")
    load_pauses.clear()
    clear_caches()


def pause_control(scope: Scope) -> None:
    """Pause an action type (of the sidebar's account, or of every account); accounts as a whole are
    paused on the Accounts page."""
    can = scope.user.is_operator
    with st.expander("Pause the queue", icon=":material/pause:"):
        options = [ALL, *ACTION_TYPES] if scope.account_id is not None else list(ACTION_TYPES)
        st.selectbox("Action type", options, key="qm_pause_action", disabled=not can,
                     format_func=lambda a: "every action type" if a == ALL else a)
        st.text_input("Reason (optional)", key="qm_pause_reason", max_chars=500, disabled=not can)
        where = scope.account_name(scope.account_id) if scope.account_id else "every account"
        st.button(f"Pause for {md_escape(where)}", key="qm_pause", on_click=_on_pause, args=(scope,), disabled=not can,
                  help=None if can else OPERATORS_ONLY)
