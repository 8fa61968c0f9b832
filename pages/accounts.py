import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import live_caption, page_guard
from lib.ui.accounts import show_accounts

scope = page_guard("Accounts")


@st.fragment(run_every=scope.run_every)
def live_panel():
    now = floor_time(utcnow(), 10)
    show_accounts(scope, now)
    live_caption(scope, utcnow())


live_panel()
