import streamlit as st

from lib.core.timeutil import utcnow
from lib.ui import page_guard
from lib.ui.oversight_chat import (
    ask,
    load_session,
    load_sessions,
    question_input,
    save_interrupted_answer,
    selected_session_id,
    show_flash,
    show_liveness,
    show_messages,
    show_pick_account,
    show_session_header,
    show_session_list,
)

scope = page_guard("Oversight Chat")
save_interrupted_answer(scope)  # an answer a stopped run could not save is saved now
if scope.account_id is None:
    show_pick_account()
    st.stop()

now = utcnow()
sessions = load_sessions(scope.db_url, scope.account_id, scope.user.name)
session_id = selected_session_id(scope, sessions)
session = load_session(scope.db_url, session_id, scope.user.name) if session_id else None

sessions_col, chat_col = st.columns([1, 3], gap="large")
with sessions_col:
    show_session_list(scope, sessions, session_id, now)
with chat_col:
    if session is not None:
        show_session_header(scope, session)
    messages = st.container()
    with messages:
        show_messages(session, scope.tz)
    show_flash()
    show_liveness(scope)
    question = question_input(scope)
    if question:
        ask(scope, session_id, question, messages)
