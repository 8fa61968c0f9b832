"""Metrics page through AppTest: KPIs and deltas, the broken-report note, empty states, PostgreSQL."""
import re
import uuid
from datetime import timedelta

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.metrics import Keys
from tests.support.reports import add_accounts, add_raw_json, add_reports, report

PAGE = "pages/metrics.py"


def seed(url, *, broken: bool = False):
    eng = make_engine(url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        alpha, beta = add_accounts(conn, "alpha", "beta")
        latest = report(alpha, "weekly", today - timedelta(days=1), reach=1200, revenue=150.0)
        previous = report(alpha, "weekly", today - timedelta(days=8), reach=1100, revenue=100.0, followers=4900,
                          comparison=None)
        rows = [latest, previous, report(beta, "weekly", today - timedelta(days=1), reach=77, comparison=None)]
        rows += [report(alpha, "daily", today - timedelta(days=d), reach=10 * d) for d in range(1, 4)]
        add_reports(conn, rows)
        if broken:
            bad = report(beta, "weekly", today - timedelta(days=8), reach=70)
            add_raw_json(conn, bad, media_metrics='{"avg_likes": ', revenue_metrics='{"attributed_revenue": "n/a"}')
    eng.dispose()
    return alpha, beta


def metric_rows(at):
    return [(m.label, m.value, m.proto.delta, m.proto.delta_description) for m in at.metric]


def _plain(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell).replace("\u200b", "").replace("\u00a0", " ").strip()


def board(at) -> dict[str, dict[str, tuple[str, str | None, str | None]]]:
    """The KPI board of several accounts: account -> KPI label -> (value, colour, change), as read
    from its Markdown table (the best and worst posts are the page's other table with an Account column)."""
    (table,) = [m.value for m in at.markdown
                if m.value.startswith("| Account |") and "| Post |" not in m.value.splitlines()[0]]
    lines = table.splitlines()
    head = [_plain(c) for c in lines[0].strip("|").split(" | ")]
    out = {}
    for line in lines[2:]:
        cells = dict(zip(head, line.strip().strip("|").split(" | ")))
        name = _plain(cells.pop("Account")).strip("*")
        cells.pop("Latest report", None)
        row = {}
        for label, cell in cells.items():
            m = re.fullmatch(r"(.*?)(?: :small\[:(\w+)\[(.*)\]\])?", cell.strip())
            row[label] = (_plain(m.group(1)), m.group(2), _plain(m.group(3)) if m.group(3) else None)
        out[name] = row
    return out


def open_cards(at):
    at.session_state[Keys.MORE_KPIS] = True  # the lazy "KPI cards of the N accounts", opened as a click does
    at.run()
    assert not at.exception


def test_kpis_and_deltas_for_one_account(run_page, sqlite_url):
    alpha, _ = seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.sidebar.selectbox(key="account").set_value(str(alpha)).run()
    assert not at.exception
    got = {label: (value, delta, desc) for label, value, delta, desc in metric_rows(at)}
    assert len(at.metric) == 8  # one account: one KPI card
    assert at.multiselect(key=Keys.IG_CHOICE).value == ["Reach", "Impressions"]  # counts: one y axis
    assert got["Reach"] == ("1,200", "+100 (+11.1 %)", "vs last 7d")  # historical_comparison.reach_delta
    assert got["Impressions"] == ("2,000", "-200 (-9.1 %)", "vs last 7d")  # historical_comparison.changes
    assert got["Attributed revenue"] == ("$150.00", "+$50.00 (+50.0 %)", "vs previous report")  # computed
    assert got["Followers"] == ("5,000", "+100 (+2.0 %)", "vs previous report")
    assert got["Avg engagement rate"][0] == "4.00 %"
    captions = " ".join(c.value for c in at.caption)
    assert "2 weekly reports · 1 account" in captions
    assert "computed against the account’s previous report" in captions
    assert not at.warning  # no broken reports
    # the details of the latest report: its insights, as text, drawn once their section is opened
    assert "Reach was 1200" not in " ".join(m.value for m in at.markdown)  # lazy: closed, not sent
    assert len(at.get("plotly_chart")) == 1  # the open chart tab only
    at.session_state[Keys.DETAILS] = True  # open the section, as a click does
    at.run()
    shown = " ".join(m.value for m in at.markdown)
    assert "Reach was 1200 in the period\\." in shown  # Markdown-escaped: rendered as plain text
    assert "Post more reels\\." in shown
    assert len(at.get("plotly_chart")) >= 2  # the open chart tab and the changes chart


def test_all_accounts_side_by_side_and_daily(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    # several accounts: one board, a row per account (no cards until they are opened)
    kpis = board(at)
    assert list(kpis) == ["alpha", "beta"]
    assert kpis["alpha"]["Reach"] == ("1,200", "green", "+11.1 %")
    assert kpis["alpha"]["Impressions"] == ("2,000", "red", "-9.1 %")
    assert kpis["alpha"]["Attributed revenue"] == ("$150.00", "green", "+50.0 %")  # against the previous report
    assert kpis["beta"]["Reach"] == ("77", None, None)  # no comparison and no previous report: no change
    assert not at.metric
    assert "Latest weekly report of each account:" in " ".join(c.value for c in at.caption)
    open_cards(at)
    assert [m.value for m in at.metric if m.label == "Reach"] == ["1,200", "77"]
    beta_reach = [m for m in at.metric if m.label == "Reach"][1]
    assert beta_reach.proto.delta == ""  # no comparison and no previous report: no delta
    at.button_group(key=Keys.TYPE).set_value("daily").run()
    assert not at.exception
    assert [m.value for m in at.metric if m.label == "Reach"] == ["10"]  # the latest daily report of alpha
    assert "3 daily reports · 1 account" in " ".join(c.value for c in at.caption)


def test_broken_reports_note(run_page, sqlite_url):
    seed(sqlite_url, broken=True)
    at = run_page(sqlite_url, PAGE)
    notes = [w.value for w in at.warning]
    assert len(notes) == 1
    assert notes[0].startswith("1 of 4 reports had unusable values")
    assert "malformed JSON" in notes[0] and "not a number" in notes[0]
    # the rest of the page still works: both accounts' KPIs are shown
    assert [row["Reach"][0] for row in board(at).values()] == ["1,200", "77"]


def test_empty_states(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    assert "No weekly reports" in at.info[0].value
    assert "analytics scheduler" in at.info[0].value
    assert not at.metric
    # accounts exist but the user deselects them all
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.multiselect(key=Keys.accounts(None)).set_value([]).run()
    assert "Pick one or more accounts" in at.info[0].value
    assert not at.metric


def test_works_on_postgresql(run_page, pg_server):
    url = pg_server.create_database("metrics_" + uuid.uuid4().hex[:8])
    seed(url, broken=True)
    at = run_page(url, PAGE)
    assert [row["Reach"][0] for row in board(at).values()] == ["1,200", "77"]
    assert at.warning[0].value.startswith("1 of 4 reports had unusable values")


def test_details_of_many_accounts_show_one_picked_account(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        ids = add_accounts(conn, "a1", "a2", "a3", "a4")
        add_reports(conn, [report(acc, "weekly", today - timedelta(days=1), reach=1000 + i) for i, acc in enumerate(ids)])
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    # KPIs of several accounts: one board, a row per account; the cards on demand
    kpis = board(at)
    assert list(kpis) == ["a1", "a2", "a3", "a4"]
    assert [row["Reach"][0] for row in kpis.values()] == ["1,000", "1,001", "1,002", "1,003"]
    assert not [m for m in at.metric if m.label == "Reach"]
    cards = [e for e in at.expander if e.label == "KPI cards of the 4 accounts"]
    assert len(cards) == 1 and not [m for m in cards[0].metric]  # closed: not drawn
    open_cards(at)
    assert [m.value for m in at.metric if m.label == "Reach"] == ["1,000", "1,001", "1,002", "1,003"]
    # four accounts: the Instagram chart starts with Reach alone (one line per account and metric)
    assert at.multiselect(key=Keys.IG_CHOICE).value == ["Reach"]
    at.session_state[Keys.DETAILS] = True
    at.run()
    picker = at.selectbox(key=Keys.DETAIL_ACCOUNT)
    assert picker.value == str(ids[0])

    def findings():
        return [m.value for m in at.markdown if "Reach was" in m.value]

    assert findings() == ["- Reach was 1000 in the period\\."]
    picker.set_value(str(ids[2])).run()
    assert findings() == ["- Reach was 1002 in the period\\."]


def test_demo_seed_renders_with_report_deltas(run_page, sqlite_url):
    """The demo seed's reports (sandbox.seed): every account's newest weekly report, deltas
    from its own historical_comparison, no problem note."""
    import sqlalchemy as sa

    from lib.core.schema import analytics_reports
    from sandbox.seed import seed_demo

    eng = make_engine(sqlite_url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    with eng.connect() as conn:
        newest = conn.execute(sa.select(analytics_reports.c.business_account_id, analytics_reports.c.instagram_metrics,
                                        analytics_reports.c.historical_comparison)
                              .where(analytics_reports.c.report_type == "weekly")
                              .order_by(analytics_reports.c.report_date)).all()
    eng.dispose()
    latest = {r.business_account_id: r for r in newest}  # the last one per account wins
    at = run_page(sqlite_url, PAGE)
    assert not at.warning
    assert sorted(row["Reach"][0] for row in board(at).values()) == sorted(
        f"{r.instagram_metrics['reach']:,}" for r in latest.values())
    open_cards(at)
    reach = [m for m in at.metric if m.label == "Reach"]
    assert len(reach) == len(latest)
    expected = sorted(f"{r.instagram_metrics['reach']:,}" for r in latest.values())
    assert sorted(m.value for m in reach) == expected
    assert {m.proto.delta_description for m in reach} == {"vs last 7d"}
    deltas = sorted(m.proto.delta.split(" ")[0] for m in reach)
    assert deltas == sorted(f"{r.historical_comparison['reach_delta']:+,}" for r in latest.values())


def test_rows_with_nothing_usable_do_not_break_the_page(run_page, sqlite_url):
    import sqlalchemy as sa

    from lib.core.schema import analytics_reports

    eng = make_engine(sqlite_url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        (acc,) = add_accounts(conn, "solo")
        add_reports(conn, [report(acc, "weekly", today - timedelta(days=1))])
        # someone else's writer: nulls and wrong types (one insert each: executemany takes the
        # first row's columns for all rows)
        conn.execute(sa.insert(analytics_reports).values(
            id=uuid.uuid4(), business_account_id=acc, report_type="weekly", report_date=None))
        conn.execute(sa.insert(analytics_reports).values(
            id=uuid.uuid4(), business_account_id=acc, report_type="weekly", report_date=utcnow() - timedelta(days=3),
            instagram_metrics=[1, 2], media_metrics="text", revenue_metrics={"attributed_revenue": {"amount": 5}},
            historical_comparison=[], insights={"key_findings": [None, 3]}))
        conn.execute(sa.insert(analytics_reports).values(  # no dates and no metrics at all
            id=uuid.uuid4(), business_account_id=acc, report_type="weekly", report_date=utcnow() - timedelta(days=5)))
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    at.button_group(key=Keys.RANGE).set_value("All").run()
    assert not at.exception
    assert at.warning[0].value.startswith("1 of 3 reports had unusable values")  # the NULL-dated row is in no range
    assert [m.value for m in at.metric if m.label == "Reach"] == ["1,000"]  # the newest good report


def test_trend_lines_have_markers_for_one_account_or_a_short_line(run_page, sqlite_url):
    """Markers on one account's lines; several accounts' lines without them (their markers were a
    tenth of the page's browser time), except a line of up to 3 points, hard to see without."""
    import json

    eng = make_engine(sqlite_url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        a, b = add_accounts(conn, "a", "b")
        rows = [report(a, "weekly", today - timedelta(days=1 + 7 * w), reach=100 + w) for w in range(5)]
        rows += [report(b, "weekly", today - timedelta(days=1 + 7 * w), reach=50 + w) for w in range(2)]
        add_reports(conn, rows)
    eng.dispose()

    def modes(at):
        traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
        return {t["name"]: t["mode"] for t in traces if t.get("type") == "scatter"}

    at = run_page(sqlite_url, PAGE)
    assert modes(at)["Reach · a"] == "lines" and modes(at)["Reach · b"] == "lines+markers"  # 5 points / 2
    at.sidebar.selectbox(key="account").set_value(str(a)).run()
    assert set(modes(at).values()) == {"lines+markers"}
