"""The guard every page starts with: page config, settings, database check, shared sidebar.

Why every page and not only app.py: with a pages/ folder Streamlit can run a deep-linked page
without app.py (its old pages-directory mode) when the link is a session's first request. The
guard makes such a run look and behave like a normal one.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from lib.accounts import Account, list_accounts
from lib.identity import Actor
from lib.db import UNAVAILABLE_ERRORS, init_db, make_engine, ping, unavailable_message
from lib.redact import install_log_redaction
from lib.settings import Settings, SettingsError, load_settings
from lib.ui.auth import authenticate, show_identity

APP_TITLE = "Agent Dashboard"
ALL_ACCOUNTS = "all"
COMMON_TIMEZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Tokyo")



@dataclass(frozen=True)
class Scope:
    settings: Settings
    user: Actor
    account_id: uuid.UUID | None  # None = all accounts
    accounts: tuple[Account, ...]
    tz: ZoneInfo
    live: bool

    @property
    def db_url(self) -> str:
        return self.settings.database_url

    @property
    def engine(self):
        return get_engine(self.db_url)

    def account_name(self, account_id) -> str:
        for acc in self.accounts:
            if str(acc.id) == str(account_id):
                return acc.username
        return "—" if account_id is None else str(account_id)


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    for name in (None, "streamlit"):  # once per process: no credential in the app's log lines
        install_log_redaction(logging.getLogger(name))
    return load_settings()


@st.cache_resource(show_spinner=False)
def get_engine(db_url: str):
    """One engine (and pool) per process, shared by every session."""
    return make_engine(db_url)


@st.cache_resource(show_spinner=False)
def ensure_schema(db_url: str):
    """Create missing tables/indexes once per process; a failure is not cached, so it is retried."""
    return init_db(get_engine(db_url))


@st.cache_data(ttl=5, show_spinner=False)
def check_database(db_url: str) -> bool:
    """A ping at most every 5 s per process (not per session): a dead database is noticed
    quickly without costing every rerun a query. Failures raise and are not cached."""
    ping(get_engine(db_url))
    return True


@st.cache_data(ttl=60, show_spinner=False)
def load_accounts(db_url: str) -> list[Account]:
    with get_engine(db_url).connect() as conn:
        return list_accounts(conn)


def show_database_error(db_url: str, exc: BaseException) -> None:
    st.error(unavailable_message(db_url, exc), icon=":material/database:")
    st.button("Try again", key="_db_retry", icon=":material/refresh:")
    st.stop()


def page_guard(title: str) -> Scope:
    """Call first on every page. Stops the run with a clear message when the app cannot work."""
    st.set_page_config(page_title=f"{title} · {APP_TITLE}", page_icon=":material/monitor_heart:", layout="wide")
    try:
        settings = get_settings()
    except SettingsError as exc:
        st.error(f"Configuration error: {exc}", icon=":material/settings:")
        st.stop()
    try:
        report = ensure_schema(settings.database_url)
        check_database(settings.database_url)
        accounts = tuple(load_accounts(settings.database_url))
    except UNAVAILABLE_ERRORS as exc:
        show_database_error(settings.database_url, exc)
    if report.missing_columns:
        missing = "; ".join(f"{t}: {', '.join(c)}" for t, c in report.missing_columns.items())
        st.warning(f"The database lacks columns this app reads ({missing}). Pages using them may fail.")
    user = authenticate(settings)
    scope = _sidebar(settings, accounts, user)
    st.title(title)
    return scope


def _sidebar(settings: Settings, accounts: tuple[Account, ...], user: Actor) -> Scope:
    with st.sidebar:
        names = {str(a.id): a.username + ("" if a.is_connected else " (disconnected)") for a in accounts}
        choice = st.selectbox(
            "Business account",
            [ALL_ACCOUNTS, *names],
            format_func=lambda v: "All accounts" if v == ALL_ACCOUNTS else names.get(v, v),
            key="account",
            bind="query-params",
        )
        tz_default = settings.display_timezone
        tz_options = list(dict.fromkeys([tz_default, *COMMON_TIMEZONES]))
        tz_name = st.selectbox("Display timezone", tz_options, key="tz", persist_state="session")
        live = st.toggle("Live refresh (30 s)", value=True, key="live", persist_state="session")
        show_identity(settings, user)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    account_id = None if choice in (None, ALL_ACCOUNTS) else uuid.UUID(choice)
    return Scope(settings=settings, user=user, account_id=account_id, accounts=accounts, tz=tz, live=live)




@contextmanager
def navigation_run():
    """app.py wraps pg.run() in this: a database that dies mid-page shows the same clear message
    as one that was down at the start. (In pages-directory mode Streamlit draws its own menu of
    the pages/ files, so the guard needs no menu of its own.)"""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        show_database_error(get_settings().database_url, exc)
