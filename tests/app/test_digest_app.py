"""Weekly digest page through AppTest: the preview on the demo data; Send now disabled for viewers
without routes, and for an operator (local mode) it delivers to a json:// receiver on 127.0.0.1."""
from sandbox.notify_sink import NotifySink

PAGE = "pages/digest.py"


def test_preview_on_the_demo_data_and_send_now(run_page, demo_url):
    at = run_page(demo_url, PAGE)
    assert not at.exception
    assert at.subheader[0].value.startswith("Weekly digest · all accounts")
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
