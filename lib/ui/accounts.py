"""Accounts page: one card per business account — connection, pause, queue, last
outcomes per action type, Graph usage, publishing quota, token expiry — never the token.

State: no keys of its own beyond the buttons' (acc_pause_<id>, acc_resume_<id>, acc_reason_<id>).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import streamlit as st

from lib.core.text import clip, md_escape
from lib.core.timeutil import fmt_duration, fmt_local, utcnow
from lib.queue.accounts import USAGE_WARN, AccountHealth, account_health
from lib.queue.store import pause, resume
from lib.ui.auth import current_actor
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.queue_monitor import load_health as qm_health
from lib.ui.queue_monitor import load_summary
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine
from lib.ui.text import ago

WHERE = "accounts"


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_health(db_url: str, account_id: uuid.UUID | None, now: datetime) -> list[AccountHealth]:
    with get_engine(db_url).connect() as conn:
        return account_health(conn, now=now, account_id=account_id)


def clear_caches() -> None:
    load_health.clear()
    qm_health.clear()
    load_summary.clear()


def _on_pause(scope: Scope, account_id: uuid.UUID, name: str) -> None:
    reason = st.session_state.get(f"acc_reason_{account_id}") or None
    done = guarded_write(WHERE, "Pause", get_engine(scope.db_url), lambda conn: pause(
        conn, actor=current_actor(scope.settings), now=utcnow(), business_account_id=account_id,
        reason=reason))
    if done is not None:
        flash(WHERE, "success", f"Paused {md_escape(name)}: the worker takes none of its rows until it is resumed.")
    clear_caches()


def _on_resume(scope: Scope, pause_id: uuid.UUID, name: str) -> None:
    done = guarded_write(WHERE, "Resume", get_engine(scope.db_url), lambda conn: resume(
        conn, pause_id, actor=current_actor(scope.settings), now=utcnow()))
    if done:
        flash(WHERE, "success", f"Resumed {md_escape(name)}: its waiting rows are due again now.")
    elif done is False:
        flash(WHERE, "info", "That pause had already ended; nothing changed.")
    clear_caches()


def _pct(v: Any) -> str:
    return "—" if v is None else f"{float(v):.0f} %"


def show_card(card: AccountHealth, scope: Scope, now: datetime) -> None:
    with st.container(border=True, key=f"acc_card_{card.id}"):
        head, state = st.columns([3, 2], vertical_alignment="center")
        head.markdown(f"#### {md_escape(card.name)}")
        if card.is_connected:
            state.badge("connected", icon=":material/link:", color="green")
        else:
            since = f" since {fmt_local(card.disconnected_at, scope.tz)}" if card.disconnected_at else ""
            state.badge(f"disconnected{since}", icon=":material/link_off:", color="red")
            if card.disconnect_reason:
                st.caption("Why: the auth failure that disconnected it")
                st.code(clip(card.disconnect_reason, 500), language=None, wrap_lines=True)
        show_pause(card, scope, now)
        c = card.counts
        cols = st.columns(4)
        cols[0].metric("Pending", f"{c['pending']:,}")
        cols[1].metric("Due", f"{c['due']:,}", delta=f"{c['held_back']:,} held back" if c["held_back"] else None,
                       delta_color="off")
        cols[2].metric("Failed", f"{c['failed']:,}")
        cols[3].metric("DLQ", f"{c['dlq']:,}")
        show_outcomes(card, scope, now)
        show_usage(card, scope, now)


def show_pause(card: AccountHealth, scope: Scope, now: datetime) -> None:
    can = scope.user.is_operator
    own = [p for p in card.pauses if p.business_account_id == card.id]
    for p in card.pauses:
        what = "everything" if p.action_type is None else md_escape(p.action_type)
        where = "this account" if p.business_account_id == card.id else "every account"
        note = f" — “{md_escape(clip(p.reason, 200))}”" if p.reason else ""
        st.warning(f"Paused: {what} of {where}, by {md_escape(p.paused_by)} {ago(p.paused_at)}"
                   f"{note}; {p.waiting:,} due rows wait behind it.", icon=":material/pause_circle:")
    if own:
        st.button("Resume", key=f"acc_resume_{card.id}", disabled=not can, icon=":material/play_arrow:",
                  on_click=_on_resume, args=(scope, own[0].id, card.name),
                  help=None if can else "Operators only")
    else:
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.text_input("Reason (optional)", key=f"acc_reason_{card.id}", max_chars=500, disabled=not can,
                        placeholder="e.g. rotating the token")
        right.button("Pause", key=f"acc_pause_{card.id}", disabled=not can, icon=":material/pause:",
                     on_click=_on_pause, args=(scope, card.id, card.name), help=None if can else "Operators only")


def show_outcomes(card: AccountHealth, scope: Scope, now: datetime) -> None:
    rows = []
    for action in sorted(set(card.last_success) | set(card.last_failure)):
        ok = card.last_success.get(action)
        bad = card.last_failure.get(action)
        rows.append({"action": action,
                     "last success": ago(ok) if ok else "—",
                     "last failure": f"{ago(bad[0])} ({bad[2]})" if bad else "—",
                     "error": clip(bad[1] or "", 160) if bad else ""})
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.caption("No action of this account has been executed yet.")


def show_usage(card: AccountHealth, scope: Scope, now: datetime) -> None:
    u = card.usage or {}
    parts = []
    if u.get("seen_at"):
        parts.append(f"Graph usage ({ago(u['seen_at'])}): calls {_pct(u.get('call_count'))}, "
                     f"CPU {_pct(u.get('total_cputime'))}, time {_pct(u.get('total_time'))}")
        if u.get("regain_at") and u["regain_at"] > now:
            parts.append(f"access back in {fmt_duration((u['regain_at'] - now).total_seconds())}")
    quota = card.quota
    if quota:
        used, total, seen = quota
        parts.append(f"publishing quota {used} of {total or '?'} posts in 24 h ({ago(seen)})")
    if u.get("token_checked_at"):
        exp = u.get("token_expires_at")
        parts.append("token never expires" if exp is None else f"token expires {fmt_local(exp, scope.tz)}")
    else:
        parts.append("token expiry unknown (set META_APP_TOKEN to read it with debug_token)")
    if card.usage_warning:
        st.warning(f"Graph usage above {USAGE_WARN:.0f} %: " + "; ".join(parts), icon=":material/speed:")
    else:
        st.caption(" · ".join(parts) if u.get("seen_at") or quota else
                   "No Graph usage recorded yet (the worker records it from Instagram's answers). · " + parts[-1])


def show_accounts(scope: Scope, now: datetime) -> None:
    show_flash(WHERE)
    cards = load_health(scope.db_url, scope.account_id, now)
    if not cards:
        st.info("No business accounts yet. Accounts are rows of instagram_business_accounts (the demo seeds three).",
                icon=":material/person_off:")
        return
    for card in cards:
        show_card(card, scope, now)
