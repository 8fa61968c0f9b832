import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import live_caption, page_guard
from lib.ui.incidents import filters, load_incidents, show_incident, show_list

scope = page_guard("Incidents")
chosen = filters(scope, floor_time(utcnow(), 30))


@st.fragment(run_every=scope.run_every)
def live_panel():
    now = floor_time(utcnow(), 10)
    show_list(load_incidents(scope.db_url, chosen), scope, now)
    show_incident(scope, now)
    live_caption(scope, utcnow())


live_panel()
