"""Feedback after an operator action, the same on every page: flash messages (shown on the next
run, once), pending confirmations, and the one guarded write that turns a refusal into a message.

A flash belongs to one page (its `where`), so a message never shows up on another page.
A flash's text is Markdown the caller owns: escape untrusted parts (lib.core.text.md_escape) before;
guarded_write does so for the database's and the role check's texts.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
import streamlit as st

from lib.core.identity import PermissionDenied
from lib.core.text import md_escape

T = TypeVar("T")

KINDS = {
    "success": (st.success, ":material/task_alt:"),
    "info": (st.info, ":material/info:"),
    "warning": (st.warning, ":material/warning:"),
    "error": (st.error, ":material/error:"),
}


def _flash_key(where: str) -> str:
    return f"_flash_{where}"


def flash(where: str, kind: str, text: str) -> None:
    """Queue a message for the next time `where`'s show_flash runs (e.g. after st.rerun)."""
    if kind not in KINDS:
        raise ValueError(f"unknown flash kind {kind!r}")
    st.session_state.setdefault(_flash_key(where), []).append((kind, text))


def show_flash(where: str) -> None:
    """Show and forget `where`'s queued messages."""
    for kind, text in st.session_state.pop(_flash_key(where), None) or ():
        show, icon = KINDS[kind]
        show(text, icon=icon)


def refusal_message(exc: BaseException) -> str:
    """Why a write did not happen, in the operator's words (Markdown-escaped)."""
    if isinstance(exc, PermissionDenied):
        return md_escape(exc)
    reason = (str(getattr(exc, "orig", exc)).splitlines() or [type(exc).__name__])[0][:200]
    return f"The database refused the change ({md_escape(reason)}); nothing was changed. Try again."


def guarded_write(where: str, label: str, engine, write: Callable[[sa.Connection], T]) -> T | None:
    """Run `write(conn)` in one transaction. A missing role (PermissionDenied) or a database that
    refuses the change (e.g. SQLite busy past its timeout: OperationalError, rolled back) becomes
    an error flash "<label> failed: ..." for `where`, and the result is None."""
    try:
        with engine.begin() as conn:
            return write(conn)
    except (PermissionDenied, sa.exc.OperationalError) as exc:
        flash(where, "error", f"{label} failed: {refusal_message(exc)}")
        return None


class Confirmation:
    """A pending "are you sure?" for one action: what was asked (its payload) until confirmed or
    cancelled. Render it outside ticking fragments when it opens a dialog (streamlit#17011)."""

    def __init__(self, key: str):
        self.key = key

    def ask(self, payload: Any) -> None:
        st.session_state[self.key] = payload

    @property
    def pending(self) -> Any:
        return st.session_state.get(self.key)

    def cancel(self) -> None:
        st.session_state.pop(self.key, None)
