"""Activity Feed through AppTest: default view, filters, paging, search literals, empty states."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.audit import audit_row
from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, instagram_business_accounts
from lib.core.timeutil import utcnow
from lib.ui.activity_feed import Keys

PAGE = "pages/activity_feed.py"
ACC = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")


def seed(url, n=120):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    rows = []
    for i in range(n):
        ok = i % 3 != 0
        rows.append(audit_row(
            event_type="dm_sent" if i % 2 else "post_published", action="send" if i % 2 else "publish",
            resource_type="instagram_dm" if i % 2 else "instagram_post", resource_id=f"res-{i:03d}",
            now=now - timedelta(minutes=i + 1), user_id="worker", success=ok,
            error_message=None if ok else f"boom {i}",
            details={"business_account_id": str(ACC) if i < 10 else str(uuid.uuid4())},
        ))
    rows.append(audit_row(event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                          resource_id="'; drop table audit_log; --", now=now - timedelta(days=3), success=False,
                          error_message="*not bold* <b>x</b>"))
    with eng.begin() as conn:
        conn.execute(sa.insert(audit_log), rows)
        conn.execute(sa.insert(instagram_business_accounts), [{"id": ACC, "username": "acme_shop", "is_connected": True}])
    eng.dispose()


def labels(at):
    """Expander labels without the Markdown escapes the page adds to untrusted text."""
    return [e.label.replace("\\", "") for e in at.expander]


def test_default_view_newest_first_with_chart_and_pager(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert len(at.expander) == 50  # the first page of the last 24 h
    assert "res-000" in labels(at)[0] and "res-049" in labels(at)[-1]
    assert any("120 matching" in c.value for c in at.caption)
    older = at.button(key="feed-pager-older")
    assert not older.disabled and at.button(key="feed-pager-newer").disabled
    older.click().run()
    assert "res-050" in labels(at)[0]
    at.button(key="feed-pager-older").click().run()
    assert len(at.expander) == 20 and at.button(key="feed-pager-older").disabled
    at.button(key="feed-pager-newer").click().run()
    assert "res-050" in labels(at)[0]


def test_filters_narrow_the_view(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.multiselect(key=Keys.TYPES).set_value(["dm_sent"]).run()
    at.segmented_control(key=Keys.OUTCOME).set_value("failure").run()
    assert labels(at) and all("dm_sent" in label and "failure" in label for label in labels(at))
    assert len(at.expander) == 20  # odd i with i % 3 == 0 among 120
    at.text_input(key=Keys.SEARCH).set_value("boom 9").run()  # 9, 93, 99 (odd and i % 3 == 0)
    assert sorted(label.split("· ")[2].split()[1] for label in labels(at)) == ["res-009", "res-093", "res-099"]


def test_account_from_the_sidebar(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key="account").set_value(str(ACC)).run()
    assert len(at.expander) == 10
    assert any("acme\\_shop" in s.value for s in at.subheader)


def test_literal_search_and_untrusted_text(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key=Keys.RANGE).set_value("7d").run()
    at.text_input(key=Keys.SEARCH).set_value("'; drop table").run()
    assert len(at.expander) == 1
    assert "drop table audit_log" in labels(at)[0]
    assert not at.code  # entries are lazy: a closed one sends only its line
    [event_key] = [k for k in at.session_state if k.startswith(Keys.event(""))]
    at.session_state[event_key] = True  # open it, as a click does
    at.run()
    assert [c.value for c in at.code] == ["*not bold* <b>x</b>"]  # shown as text, not Markdown/HTML
    at.text_input(key=Keys.SEARCH).set_value("%_").run()
    assert not at.expander
    assert "No events match these filters" in at.info[0].value


def test_empty_database(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    assert "No activity in this time range" in at.info[0].value
    assert not at.error


def test_custom_date_range(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key=Keys.RANGE).set_value("custom").run()
    today = utcnow().date()
    # the DLQ row of three days ago only
    at.date_input(key="feed_from").set_value(today - timedelta(days=3)).run()
    at.date_input(key="feed_to").set_value(today - timedelta(days=3)).run()
    assert len(at.expander) == 1 and "post_failed_permanent" in labels(at)[0]
    # reversed dates are swapped with a warning, nothing lost
    at.date_input(key="feed_from").set_value(today).run()
    at.date_input(key="feed_to").set_value(today - timedelta(days=3)).run()
    assert "'From' is after 'To'" in at.warning[0].value
    assert any("121 matching" in c.value for c in at.caption)
