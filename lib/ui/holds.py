"""What Instagram holds back, said at the top of the Overview and the Queue Monitor: the app-wide
throttle, an account's throttle, a blocked or restricted account -- until when, how many rows wait,
what the owner must do -- with Resume for an operator where a hold waits for one."""
from __future__ import annotations

import uuid
from datetime import datetime

import streamlit as st

from lib.core.timeutil import fmt_local, utcnow
from lib.instagram.account_holds import Hold, active_holds, resume
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine
from lib.ui.text import md_escape

FLASH = "holds_flash"


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_holds(db_url: str, account_id: uuid.UUID | None, now: datetime) -> list[Hold]:
    with get_engine(db_url).connect() as conn:
        return active_holds(conn, now=now, account_id=account_id)


def _on_resume(scope: Scope, account_id: uuid.UUID) -> None:
    done = guarded_write(FLASH, "Resume", scope.engine,
                         lambda conn: resume(conn, account_id, actor=current_actor(scope.settings), now=utcnow()))
    if done:
        flash(FLASH, "success", "Resumed: the worker takes this account's rows again on its next tick.")
    load_holds.clear()


def show_holds(scope: Scope, now: datetime, *, controls: bool = True) -> None:
    """One banner per hold, the app-wide throttle first (the worker holds every account then)."""
    show_flash(FLASH)
    for i, h in enumerate(load_holds(scope.db_url, scope.account_id, now)):
        what = f"{md_escape(h.headline_with(lambda t: fmt_local(t, scope.tz)))}."
        if h.owner_must:
            what += f" What to do: {md_escape(h.owner_must)}."
        manual = controls and h.business_account_id is not None and h.kind not in ("app_throttle", "account_throttle")
        row = st.columns([5, 1], vertical_alignment="center") if manual else [st.container()]
        (row[0].error if h.until is None else row[0].warning)(what, icon=":material/block:")
        if manual:
            row[1].button("Resume account", key=f"hold_resume_{i}", on_click=_on_resume,
                          args=(scope, h.business_account_id), disabled=not scope.user.is_operator,
                          icon=":material/play_arrow:",
                          help="Resume once the account's owner has dealt with it" if scope.user.is_operator
                          else OPERATORS_ONLY)
