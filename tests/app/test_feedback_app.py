"""lib/ui/feedback.py: one guarded write for every page (a missing role and a busy SQLite become
messages), flash messages per page, and pending confirmations."""
import sqlite3

from streamlit.testing.v1 import AppTest


def _script(db_path, mode):
    import sqlalchemy as sa
    import streamlit as st

    from lib.core.identity import VIEWER, Actor, require_operator
    from lib.ui.feedback import Confirmation, guarded_write, show_flash

    engine = sa.create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 0.2})

    def write(conn):
        if mode == "viewer":
            require_operator(Actor("v@x", VIEWER, "local"), "retry queue rows")
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        return "done"

    if st.button("Go", key="go"):
        st.session_state["result"] = guarded_write("here", "Retry", engine, write)
        st.rerun()
    show_flash("here")
    show_flash("elsewhere")
    confirm = Confirmation("confirm_key")
    if st.button("Ask", key="ask"):
        confirm.ask({"count": 3})
    st.write(f"pending={confirm.pending}")


def app(tmp_path, mode):
    db = tmp_path / "f.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)").connection.commit()
    at = AppTest.from_function(_script, args=(str(db), mode), default_timeout=20)
    at.run()
    return at, db


def rows(db) -> int:
    return sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0]


def test_a_write_that_works_returns_its_result(tmp_path):
    at, db = app(tmp_path, "operator")
    at.button(key="go").click().run()
    assert at.session_state["result"] == "done" and rows(db) == 1 and not at.error


def test_a_missing_role_becomes_a_message(tmp_path):
    at, db = app(tmp_path, "viewer")
    at.button(key="go").click().run()
    assert at.session_state["result"] is None and rows(db) == 0
    assert len(at.error) == 1
    assert at.error[0].value.replace("\u200b", "").startswith("Retry failed: v@x may not retry queue rows")  # @ breaks autolinks
    at.run()
    assert not at.error  # a flash shows once


def test_a_busy_sqlite_becomes_a_message_and_nothing_changes(tmp_path):
    at, db = app(tmp_path, "operator")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the 0.2 s timeout
    try:
        at.button(key="go").click().run()
    finally:
        holder.execute("ROLLBACK")
    assert at.session_state["result"] is None and rows(db) == 0
    assert len(at.error) == 1
    assert "The database refused the change (database is locked); nothing was changed. Try again." in at.error[0].value


def test_a_confirmation_stays_pending_until_cancelled(tmp_path):
    at, _ = app(tmp_path, "operator")
    assert at.markdown[-1].value == "pending=None"
    at.button(key="ask").click().run()
    at.run()
    assert at.markdown[-1].value == "pending={'count': 3}" and at.session_state["confirm_key"] == {"count": 3}
