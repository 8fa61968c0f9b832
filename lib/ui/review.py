"""The Review page's parts: the held rows, one row's detail with its context and the decision forms,
bulk decisions with a confirmation naming the count, the policies, and what the decisions teach."""
from __future__ import annotations

import uuid
from datetime import datetime

import pandas as pd
import streamlit as st

from lib.core.identity import PermissionDenied
from lib.core.schema import ACTION_TYPES
from lib.core.text import clip
from lib.core.timeutil import fmt_duration, fmt_local, utcnow
from lib.instagram.client import GraphClient
from lib.instagram.payload_rules import is_http_url
from lib.queue.review import (
    HeldRow,
    decision_stats,
    export_decisions,
    fetch_context,
    held_rows,
    list_policies,
    stored_text_fields,
)
from lib.queue.review_rules import MODE_LABELS, MODES, ReviewError, parse_review_actions, unknown_actions
from lib.queue.rules import CONTENT_ACTIONS
from lib.queue.store import approve, decide_many, reject, remove_policy, set_policy
from lib.ui.auth import current_actor
from lib.ui.export import export_control
from lib.ui.feedback import Confirmation, flash, refusal_message, show_flash
from lib.ui.shell import Scope, lazy_expander
from lib.ui.text import md_escape

FLASH = "review"
TABLE = "rv_table"
TABLE_VER = "rv_table_ver"  # bumped after a decision: a fresh table, an empty selection
SELECTED = "rv_selected"
BULK = Confirmation("rv_bulk")
ALL = "all"


@st.cache_resource(show_spinner=False)
def graph_client(base_url: str, connect_timeout: float, read_timeout: float, api: str) -> GraphClient:
    return GraphClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, api=api)


def _client(scope: Scope) -> GraphClient:
    s = scope.settings
    return graph_client(s.graph_url, s.graph_connect_timeout_s, s.graph_read_timeout_s, s.instagram_api)


# -- filters and the table ------------------------------------------------------------------------------

def filters(scope: Scope) -> tuple[str | None, bool]:
    show_flash(FLASH)
    left, right, refresh = st.columns([2, 2, 1], vertical_alignment="bottom")
    action = left.selectbox("Action type", [ALL, *ACTION_TYPES], key="rv_action",
                            format_func=lambda v: "All action types" if v == ALL else v)
    order = right.radio("Order", ["Newest first", "Oldest first"], key="rv_order", horizontal=True)
    refresh.button("Refresh", key="rv_refresh", icon=":material/refresh:")
    return (None if action == ALL else action), order == "Oldest first"


def load_held(scope: Scope, action_type: str | None, oldest_first: bool, now: datetime) -> list[HeldRow]:
    with scope.engine.connect() as conn:
        return held_rows(conn, now=now, account_id=scope.account_id, action_type=action_type,
                         oldest_first=oldest_first, review_actions=parse_review_actions(scope.settings.review_actions))


def arrivals(scope: Scope, action_type: str | None, shown: int) -> None:
    """A live line (every POLL_INTERVAL_S; the list itself stays put, so a selection or a half-typed edit is
    not disturbed): how many rows wait now, when that differs from the list on screen."""

    @st.fragment(run_every=scope.run_every)
    def panel():
        now = utcnow()
        with scope.engine.connect() as conn:
            waiting = len(held_rows(conn, now=now, account_id=scope.account_id, action_type=action_type,
                                    review_actions=parse_review_actions(scope.settings.review_actions)))
        if waiting != shown:
            st.info(f"{waiting:,} row(s) wait for review now; this list shows {shown:,}. Press Refresh to see them.",
                    icon=":material/update:")

    panel()


def _when(row: HeldRow, now: datetime, scope: Scope) -> str:
    if row.window_ends_at is not None:
        left = (row.window_ends_at - now).total_seconds()
        return "window closed" if left <= 0 else f"{fmt_duration(left)} left"
    due = row.next_retry_at or (row.created_at if row.action_type in CONTENT_ACTIONS else None)
    if due is not None:  # a post keeps its schedule
        return f"due {fmt_local(due, scope.tz, with_seconds=False)}"
    return "—"


def _on_select(key: str, ids: list[str]) -> None:
    rows = st.session_state[key].selection.rows
    st.session_state[SELECTED] = [ids[i] for i in rows if i < len(ids)]


def show_queue(scope: Scope, rows: list[HeldRow], now: datetime) -> list[str]:
    """The held rows (DMs first, least time left first) with a multi-row selection; returns the selected ids."""
    if not rows:
        st.info("Nothing waits for review.", icon=":material/task_alt:")
        return []
    st.caption(f"{len(rows):,} row(s) wait for review" + (" (the first 200)" if len(rows) >= 200 else ""))
    ids = [str(r.id) for r in rows]
    df = pd.DataFrame([{
        "Account": r.account or (str(r.business_account_id) if r.business_account_id else "—"),
        "Action": r.action_type,
        "Text": clip(r.text, 200),
        "Queued": fmt_local(r.created_at, scope.tz) if r.created_at else "—",
        "Time left / due": _when(r, now, scope),
        "Queue id": str(r.id),
    } for r in rows])
    key = f"{TABLE}_{st.session_state.get(TABLE_VER, 0)}"
    st.dataframe(df, hide_index=True, width="stretch", key=key, on_select=lambda: _on_select(key, ids),
                 selection_mode="multi-row")
    selected = [i for i in st.session_state.get(SELECTED, []) if i in ids]
    can = scope.user.is_operator
    a, r, _ = st.columns([1, 1, 3])
    if a.button(f"Approve selected ({len(selected)})", key="rv_bulk_approve", disabled=not (can and selected),
                icon=":material/done_all:"):
        BULK.ask({"decision": "approve", "ids": selected})
    if r.button(f"Reject selected ({len(selected)})", key="rv_bulk_reject", disabled=not (can and selected),
                icon=":material/block:"):
        BULK.ask({"decision": "reject", "ids": selected})
    if not can:
        st.caption("Viewers see the queue and the context; only operators decide.")
    return selected


def _after_decision() -> None:
    st.session_state[TABLE_VER] = st.session_state.get(TABLE_VER, 0) + 1
    st.session_state.pop(SELECTED, None)


def confirm_bulk(scope: Scope) -> None:
    pending = BULK.pending
    if not pending:
        return
    decision, ids = pending["decision"], pending["ids"]
    verb = "Approve" if decision == "approve" else "Reject"

    @st.dialog(f"{verb} selected rows", on_dismiss=BULK.cancel)
    def dialog():
        st.markdown(f"{verb} **{len(ids):,}** row(s)?")
        if decision == "approve":
            st.caption("Each is sent as it stands (no edits) by the worker's next pass.")
            reason = None
        else:
            st.caption("Each goes to the dead-letter queue with the error \"rejected in review\" and is never sent.")
            reason = st.text_input("Reason (optional)", key="rv_bulk_reason", max_chars=500)
        ok, no = st.columns(2)
        if ok.button(f"{verb} {len(ids):,} rows", type="primary", key="rv_bulk_ok"):
            try:
                with scope.engine.begin() as conn:
                    results = decide_many(conn, ids, decision=decision, actor=current_actor(scope.settings),
                                          now=utcnow(), reason=reason)
            except (PermissionDenied, ReviewError) as exc:
                why = refusal_message(exc) if isinstance(exc, PermissionDenied) else md_escape(exc)
                flash(FLASH, "error", f"{verb} failed: {why}")
            else:
                done = sum(r.success for r in results)
                flash(FLASH, "success" if done == len(results) else "warning",
                      f"{verb}d {done:,} of {len(results):,} row(s)."
                      + "".join(f" {md_escape(r.queue_id)}: {md_escape(r.message)}" for r in results if not r.success))
            BULK.cancel()
            _after_decision()
            st.rerun()
        if no.button("Cancel", key="rv_bulk_cancel"):
            BULK.cancel()
            st.rerun()

    dialog()


# -- one row: what would be sent, its context, the decision -------------------------------------------------

def _label(row: HeldRow, scope: Scope, now: datetime) -> str:
    text = " ".join(row.text.split())
    return f"{row.account or '—'} · {row.action_type} · {_when(row, now, scope)} · {text[:60]}"


def show_detail(scope: Scope, rows: list[HeldRow], now: datetime) -> None:
    if not rows:
        return
    by_id = {str(r.id): r for r in rows}
    st.subheader("Decide")
    chosen = st.selectbox("Row", list(by_id), key="rv_open", format_func=lambda i: _label(by_id[i], scope, now))
    row = by_id[chosen]
    with st.container(border=True, key="rv_detail"):
        facts = {"Queue id": str(row.id), "Account": row.account or "—", "Action": row.action_type,
                 "Queued by the agent": fmt_local(row.created_at, scope.tz) if row.created_at else "—"}
        if row.window_ends_at is not None:
            facts["Messaging window ends"] = f"{fmt_local(row.window_ends_at, scope.tz)} ({_when(row, now, scope)})"
        elif row.action_type in CONTENT_ACTIONS:
            due = row.next_retry_at or row.created_at
            facts["Was due"] = fmt_local(due, scope.tz) if due else "—"
        st.dataframe(pd.DataFrame([facts]), hide_index=True, width="stretch")
        st.caption("What would be sent")
        st.text(row.text or "(no text)")
        if row.action_type in CONTENT_ACTIONS:
            url = row.payload.get("image_url") or row.payload.get("media_url")
            if url and is_http_url(url):
                st.image(str(url), width=320, caption="Media preview (loaded by your browser from its URL)")
            elif row.payload.get("video_url"):
                st.caption("Video: " + md_escape(row.payload.get("video_url")))
        show_context(scope, row, now)
        decision_forms(scope, row)


def show_context(scope: Scope, row: HeldRow, now: datetime) -> None:
    if row.action_type in CONTENT_ACTIONS:
        return
    refresh = st.button("Read the context again", key="rv_ctx_refresh", icon=":material/sync:")
    ctx = fetch_context(scope.engine, row.id, _client(scope), now=now, refresh=refresh)
    st.caption("Context, read from Instagram with the account's token"
               + (f" at {fmt_local(ctx.fetched_at, scope.tz)}" if ctx.fetched_at else ""))
    if ctx.error:
        st.warning("The context could not be read from Instagram: " + md_escape(clip(ctx.error, 300))
                   + ". Decide from the text alone, or try again.", icon=":material/cloud_off:")
        return
    data = ctx.data or {}
    if data.get("kind") == "comment":
        c, p = data.get("comment") or {}, data.get("post")
        st.text(f"Comment by @{c.get('username') or '?'} ({c.get('timestamp') or 'time unknown'}):\n{c.get('text') or ''}")
        if p:
            st.text(f"On the post {p.get('permalink') or p.get('id')}:\n{p.get('caption') or '(no caption)'}")
            if p.get("media_url") and is_http_url(p["media_url"]) and p.get("media_type") in (None, "IMAGE", "CAROUSEL_ALBUM"):
                st.image(str(p["media_url"]), width=240)
    elif data.get("kind") == "dm":
        msgs = data.get("messages") or []
        if not msgs:
            st.info("No conversation with this person could be found: Instagram lets a business message only "
                    "people who wrote to it in the last 24 hours.", icon=":material/info:")
        else:
            st.dataframe(pd.DataFrame([{"From": ("us · " if m.get("from_us") else "") + str(m.get("from") or "?"),
                                        "When": m.get("created_time"), "Message": m.get("message")}
                                       for m in reversed(msgs)]), hide_index=True, width="stretch")


def decision_forms(scope: Scope, row: HeldRow) -> None:
    can = scope.user.is_operator
    with scope.engine.connect() as conn:
        stored = stored_text_fields(conn, row.id)
    left, right = st.columns([3, 2])
    with left.form(f"rv_approve_{row.id}", border=True):
        st.caption("Approve (edit the text first if it needs it)")
        values = {k: st.text_area(k, value=v, key=f"rv_edit_{row.id}_{k}", disabled=not can,
                                  height=68 if k.endswith("_url") else 140) for k, v in stored.items()}
        if st.form_submit_button("Approve", type="primary", disabled=not can, icon=":material/check:"):
            changes = {k: v for k, v in values.items() if v != stored.get(k)}
            _decide(scope, "Approve", lambda conn: approve(conn, row.id, actor=current_actor(scope.settings),
                                                           now=utcnow(), changes=changes or None))
    with right.form(f"rv_reject_{row.id}", border=True):
        st.caption("Reject: the row goes to the dead-letter queue and is never sent")
        reason = st.text_input("Reason (optional)", key=f"rv_reason_{row.id}", disabled=not can, max_chars=500)
        if st.form_submit_button("Reject", disabled=not can, icon=":material/block:"):
            _decide(scope, "Reject", lambda conn: reject(conn, row.id, actor=current_actor(scope.settings),
                                                         now=utcnow(), reason=reason))


def _decide(scope: Scope, label: str, write) -> None:
    try:
        with scope.engine.begin() as conn:
            result = write(conn)
    except PermissionDenied as exc:
        st.error(f"{label} failed: {refusal_message(exc)}", icon=":material/error:")
        return
    except ReviewError as exc:
        st.error(f"Not done: {md_escape(exc)}", icon=":material/error:")
        return
    flash(FLASH, "success", md_escape(result.message))
    _after_decision()
    st.rerun()


# -- policies ----------------------------------------------------------------------------------------

def show_policies(scope: Scope) -> None:
    panel = lazy_expander("Review policies", key="rv_policies", icon=":material/rule:")
    if panel is None:
        return
    with panel:
        env = scope.settings.review_actions
        default = parse_review_actions(env)
        st.caption("Without a policy, REVIEW_ACTIONS decides: "
                   + (md_escape(", ".join(default)) + " always reviewed" if default else "nothing is held")
                   + ". An account's own policy wins over the one for every account. Changes apply at the worker's "
                     "next pass: what is pending is held or released then.")
        bad = unknown_actions(env)
        if bad:
            st.warning("REVIEW_ACTIONS names unknown action types (ignored): " + md_escape(", ".join(bad)))
        with scope.engine.connect() as conn:
            policies = list_policies(conn)
        names = {str(a.id): a.username for a in scope.accounts}
        if policies:
            st.dataframe(pd.DataFrame([{
                "Account": "Every account" if p.business_account_id is None else names.get(str(p.business_account_id),
                                                                                          str(p.business_account_id)),
                "Action": p.action_type, "Mode": p.mode, "N": p.first_n, "Words / patterns": ", ".join(p.terms),
                "Set by": p.updated_by, "At": fmt_local(p.updated_at, scope.tz) if p.updated_at else "—"}
                for p in policies]), hide_index=True, width="stretch")
        can = scope.user.is_operator
        with st.form("rv_policy_form"):
            c1, c2 = st.columns(2)
            account = c1.selectbox("Account", [ALL, *names], key="rv_pol_account",
                                   format_func=lambda v: "Every account" if v == ALL else names.get(v, v), disabled=not can)
            action = c2.selectbox("Action type", list(ACTION_TYPES), key="rv_pol_action", disabled=not can)
            mode = st.radio("Mode", list(MODES), format_func=MODE_LABELS.get, key="rv_pol_mode", disabled=not can)
            n = st.number_input("N (first N actions)", min_value=1, max_value=100_000, value=10, key="rv_pol_n",
                                disabled=not can)
            terms = st.text_area("Words or patterns (one per line; * matches anything)", key="rv_pol_terms",
                                 disabled=not can)
            if st.form_submit_button("Save policy", disabled=not can, icon=":material/save:"):
                try:
                    with scope.engine.begin() as conn:
                        set_policy(conn, actor=current_actor(scope.settings), now=utcnow(), action_type=action,
                                   mode=mode, business_account_id=None if account == ALL else uuid.UUID(account),
                                   first_n=n, terms=terms)
                except (PermissionDenied, ReviewError) as exc:
                    st.error(f"Policy not saved: {md_escape(exc)}")
                else:
                    flash(FLASH, "success", "Policy saved.")
                    st.rerun()
        if policies:
            r1, r2 = st.columns([3, 1], vertical_alignment="bottom")
            def who(p):
                return "Every account" if p.business_account_id is None else names.get(str(p.business_account_id), "?")

            label = {str(p.id): f"{who(p)} · {p.action_type} · {p.mode}" for p in policies}
            pick = r1.selectbox("Remove a policy", list(label), format_func=label.get, key="rv_pol_remove",
                                disabled=not can)
            if r2.button("Remove policy", key="rv_pol_remove_btn", disabled=not can):
                try:
                    with scope.engine.begin() as conn:
                        remove_policy(conn, uuid.UUID(pick), actor=current_actor(scope.settings), now=utcnow())
                except PermissionDenied as exc:
                    st.error(f"Not removed: {refusal_message(exc)}")
                else:
                    flash(FLASH, "success", "Policy removed.")
                    st.rerun()


# -- learning -----------------------------------------------------------------------------------------

def show_learning(scope: Scope) -> None:
    panel = lazy_expander("What reviewers decided", key="rv_learning", icon=":material/school:")
    if panel is None:
        return
    with panel:
        with scope.engine.connect() as conn:
            stats = decision_stats(conn, now=utcnow(), account_id=scope.account_id)
        if not stats:
            st.caption("No decisions in the last 30 days.")
        else:
            st.dataframe(pd.DataFrame(stats).drop(columns=["business_account_id"]), hide_index=True, width="stretch")
            st.caption("Edited: approved after a change of the text; edit distance in characters (Levenshtein), "
                       "over the last 30 days.")

        def build(fmt: str) -> bytes:
            with scope.engine.connect() as conn:
                return export_decisions(conn, fmt, account_id=scope.account_id)

        export_control("Decisions", build, "review_decisions", key="rv_export",
                       help="Every decision with the original and the approved text")
