"""The guard every page starts with: page config, settings, database check, menu, shared sidebar.

Why every page and not only app.py: with a pages/ folder Streamlit runs a deep-linked page
without app.py (its old pages-directory mode) when the link is the first request after a server
start. The guard makes such a run look and behave like a normal one, menu included.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from lib.core.db import UNAVAILABLE_ERRORS, init_db, make_engine, ping, unavailable_message
from lib.core.identity import Actor
from lib.core.redact import install_log_redaction
from lib.core.settings import Settings, SettingsError, load_settings
from lib.queue.accounts import Account, list_accounts
from lib.ui.auth import authenticate, show_identity
from lib.ui.nav import menu_slot, show_menu

APP_TITLE = "Agent Dashboard"
ALL_ACCOUNTS = "all"
COMMON_TIMEZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Tokyo")


def cache_ttl_s(poll_interval_s: float) -> float:
    """How long the live panels' cached loaders keep a result: a little less than one refresh
    interval (25 s for the default 30 s), so every tick reads data no older than one interval."""
    return max(1.0, poll_interval_s * 5 / 6)


def _configured_poll_interval_s() -> int:
    try:
        return load_settings().poll_interval_s
    except SettingsError:  # the guard shows the configuration error; the caches use the default
        return Settings.poll_interval_s


# st.cache_data takes its ttl when a module is imported: the loaders follow POLL_INTERVAL_S as
# configured when the app process started (a changed interval needs a restart, as other settings).
CACHE_TTL_S = cache_ttl_s(_configured_poll_interval_s())



@dataclass(frozen=True)
class Scope:
    settings: Settings
    user: Actor
    account_id: uuid.UUID | None  # None = all accounts
    accounts: tuple[Account, ...]
    tz: ZoneInfo
    live: bool

    @property
    def run_every(self) -> str | None:
        """The live panels' st.fragment(run_every=...): the poll interval, or None when paused."""
        return f"{self.settings.poll_interval_s}s" if self.live else None

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


_LAST_ACCOUNT = "_account_last"  # the sidebar's account of this session's previous run


def _keep_account_across_pages(names: dict[str, str]) -> None:
    """A page switch drops the URL's query string before the bound selectbox reads it, so the
    next page would start on "All accounts": restore this session's choice when the URL names
    none. (Choosing "All accounts" records ALL, so it is not undone; a URL that names an account
    still wins.)"""
    last = st.session_state.get(_LAST_ACCOUNT)
    if "account" not in st.query_params and last in names:
        st.session_state["account"] = last


def _sidebar(settings: Settings, accounts: tuple[Account, ...], user: Actor) -> Scope:
    menu = menu_slot()
    with st.sidebar:
        names = {str(a.id): a.username + ("" if a.is_connected else " (disconnected)") for a in accounts}
        _keep_account_across_pages(names)
        choice = st.selectbox(
            "Business account",
            [ALL_ACCOUNTS, *names],
            format_func=lambda v: "All accounts" if v == ALL_ACCOUNTS else names.get(v, v),
            key="account",
            bind="query-params",
        )
        st.session_state[_LAST_ACCOUNT] = choice
        tz_default = settings.display_timezone
        tz_options = list(dict.fromkeys([tz_default, *COMMON_TIMEZONES]))
        tz_name = st.selectbox("Display timezone", tz_options, key="tz", persist_state="session")
        live = st.toggle(f"Live refresh ({settings.poll_interval_s} s)", value=True, key="live", persist_state="session")
        show_identity(settings, user)
    # the bound selectbox's URL value is its label; the menu's links carry it (a link opened in a
    # new tab keeps the account)
    show_menu(menu, {"account": names[choice]} if choice in names else None)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    account_id = None if choice in (None, ALL_ACCOUNTS) else uuid.UUID(choice)
    return Scope(settings=settings, user=user, account_id=account_id, accounts=accounts, tz=tz, live=live)




def live_caption(scope: Scope, now: datetime, paused_hint: str = "") -> None:
    """The live panels' last line: when it was drawn and how often it refreshes."""
    every = f" · refreshes every {scope.settings.poll_interval_s} s" if scope.live else f" · live refresh paused{paused_hint}"
    st.caption(f"Updated {now.astimezone(scope.tz):%H:%M:%S}{every}")


@contextmanager
def navigation_run():
    """app.py wraps pg.run() in this: a database that dies mid-page shows the same clear message
    as one that was down at the start."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        show_database_error(get_settings().database_url, exc)


def lazy_expander(label: str, *, key: str, icon: str | None = None):
    """An expander whose content is computed and sent only while it is open (Streamlit draws a
    closed expander's content otherwise: below the fold that was most of a page's browser time).
    Opening it reruns the page (cached loaders) and it stays open for the session.
    Returns the expander to draw into, or None while it is closed."""
    panel = st.expander(label, icon=icon, key=key, on_change="rerun")
    return None if panel.open is False else panel
