"""Weekly digest page through AppTest: the preview on the demo data; Send now disabled for viewers
without routes, and for an operator (local mode) it delivers to a json:// receiver on 127.0.0.1."""
import sqlalchemy as sa

from lib.core.schema import analytics_reports as t
from sandbox.notify_sink import NotifySink

PAGE = "pages/digest.py"


def test_preview_on_the_demo_data_and_send_now(run_page, demo_url):
    at = run_page(demo_url, PAGE)
    assert not at.exception
    assert at.subheader[0].value.startswith("Weekly digest · all accounts")
    # the title's week is the week of the KPIs (the demo's newest weekly reports)
    week = at.subheader[0].value.rsplit(" · ", 1)[1]
    kpis = [m.value for m in at.markdown if m.value.startswith("**KPIs**")][0]
    assert f"weekly report {week}," in kpis, (week, kpis)
    eng = sa.create_engine(demo_url)
    with eng.connect() as conn:
        newest = conn.execute(sa.select(t.c.start_date, t.c.end_date).where(t.c.report_type == "weekly")
                              .order_by(t.c.report_date.desc()).limit(1)).one()
    eng.dispose()
    assert week.replace("\\", "") == f"{str(newest.start_date)[:10]} – {str(newest.end_date)[:10]}"  # Markdown escapes
    assert at.button(key="digest_send_now").disabled  # no route configured
    assert len(at.dataframe) >= 3 and not at.dataframe[0].value.empty  # KPIs of the demo's weekly reports
    with NotifySink() as sink:
        at = run_page(demo_url, PAGE, env={"ALERT_NOTIFY_URLS": sink.apprise_url()})  # local mode: an operator
        button = at.button(key="digest_send_now")
        assert not button.disabled
        button.click().run()
        assert not at.exception and sink.received() == []  # it asks first, naming the route
        assert [t.value for t in at.text] == [
            f"json://127.0.0.1 #{__import__('lib.notify.routes', fromlist=['x']).route_id(sink.apprise_url())[1:7]}"]
        at.button(key="digest_confirm_ok").click().run()
        assert not at.exception
        assert any("Digest sent to 1 of 1 route" in s.value for s in at.success)
        assert [m["title"] for m in sink.received() if m["title"].startswith("Weekly digest")]


def test_schedule_in_words_and_alerts_in_severity_order(run_page, demo_url):
    at = run_page(demo_url, PAGE, env={"DIGEST_CRON": "0 8 * * 1"})
    assert not at.exception
    schedule = [c.value for c in at.caption if c.value.startswith("Sent by the worker")][0]
    assert "every Monday at 08:00 UTC" in schedule and "\\" not in schedule
    line = [m.value for m in at.markdown if m.value.startswith("**Open alerts**")][0]
    found = [s for s in ("CRITICAL", "ERROR", "WARNING") if s in line]
    assert len(found) >= 2 and [line.index(s) for s in found] == sorted(line.index(s) for s in found), line
