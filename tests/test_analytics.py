"""Pure analytics code: validation, flattening, deltas, period comparison, on good and broken reports."""
import json
import math
from datetime import UTC, date, datetime

import pytest

from lib.analytics import reports as an

DAY = date(2026, 11, 22)


def row(**overrides):
    base = {
        "id": "r1", "business_account_id": "acc-1", "report_type": "weekly",
        "report_date": datetime(2026, 11, 23, 8, tzinfo=UTC),
        "start_date": "2026-11-16", "end_date": "2026-11-22",
        "instagram_metrics": {"reach": 1200, "impressions": 3000, "followers_count": 5000, "follower_growth": 40,
                              "profile_views": 90, "website_clicks": 12, "avg_engagement_rate": 4.5},
        "media_metrics": {"avg_likes": 50.5, "top_performing": [{"media_id": "m1", "engagement": 80,
                                                                 "caption_snippet": "hi"}],
                          "best_post": {"media_id": "m1", "engagement": 80},
                          "by_media_type": {"VIDEO": {"count": 2, "avg_engagement_rate": 5.0}}},
        "revenue_metrics": {"attributed_revenue": 250.0, "conversion_rate": 0.02, "top_touchpoint_type": "reel"},
        "historical_comparison": {"period": "vs_last_7d", "reach_delta": 200,
                                  "changes": {"reach": {"previous": 1000, "current": 1200, "change_pct": 20.0,
                                                        "trend": "up"}}},
        "insights": {"key_findings": ["Reach up 20%."], "recommendations": ["More reels."], "anomalies": []},
        "data_sources": ["graph"],
    }
    base.update(overrides)
    return base


# --------------------------------------------------------------------------- well-formed

def test_well_formed_report_flattens_to_dotted_columns():
    report = an.parse_report(row())
    assert report.problems == []
    flat = an.flatten_report(report)
    assert flat["instagram_metrics.reach"] == 1200.0
    assert flat["revenue_metrics.conversion_rate"] == 0.02
    assert flat["revenue_metrics.top_touchpoint_type"] == "reel"
    assert flat["media_metrics.by_media_type.VIDEO.count"] == 2.0
    assert flat["historical_comparison.changes.reach.change_pct"] == 20.0
    assert flat["historical_comparison.changes.reach.trend"] == "up"
    assert json.loads(flat["media_metrics.top_performing"]) == [{"media_id": "m1", "engagement": 80.0, "caption_snippet": "hi"}]
    assert json.loads(flat["insights.recommendations"]) == ["More reels."]
    assert flat["data_sources"] == '["graph"]'
    assert flat["problems"] == ""
    assert report.period == "2026-11-16 – 2026-11-22"


def test_frame_has_every_spec_numeric_column_and_sorted_rows():
    a = an.parse_report(row(id="b", report_date=datetime(2026, 11, 23, tzinfo=UTC)))
    b = an.parse_report(row(id="a", report_date=datetime(2026, 11, 16, tzinfo=UTC)))
    df = an.reports_frame([a, b])
    assert list(df["id"]) == ["a", "b"]
    for section, keys in an.NUMERIC_FIELDS.items():
        for key in keys:
            assert df[f"{section}.{key}"].dtype == "float64"
    assert math.isnan(df.loc[0, "instagram_metrics.total_shares"])  # missing in the report


def test_lean_parse_leaves_out_posts_and_changes():
    report = an.parse_report(row(), full=False)
    flat = an.flatten_report(report, lists=False)
    assert "media_metrics.top_performing" not in flat
    assert not any(k.startswith("historical_comparison.changes") for k in flat)
    assert flat["historical_comparison.reach_delta"] == 200.0
    assert flat["media_metrics.by_media_type.VIDEO.avg_engagement_rate"] == 5.0


# --------------------------------------------------------------------------- broken reports

def test_missing_keys_and_nulls_are_missing_not_problems():
    report = an.parse_report(row(instagram_metrics={"reach": None}, media_metrics=None, revenue_metrics={},
                                 historical_comparison=None, insights=None))
    assert report.problems == []
    flat = an.flatten_report(report)
    assert "instagram_metrics.reach" not in flat
    df = an.reports_frame([report])
    assert math.isnan(df.loc[0, "instagram_metrics.reach"])


def test_numbers_stored_as_strings_are_used():
    report = an.parse_report(row(instagram_metrics={"reach": "1,234", "impressions": " 99 ", "avg_engagement_rate": "4.5%"}))
    assert report.problems == []
    im = report.sections["instagram_metrics"]
    assert (im["reach"], im["impressions"], im["avg_engagement_rate"]) == (1234.0, 99.0, 4.5)


def test_unusable_numbers_are_skipped_and_reported():
    report = an.parse_report(row(instagram_metrics={"reach": "lots", "impressions": True, "profile_views": float("nan"),
                                                    "website_clicks": [1], "followers_count": 10}))
    im = report.sections["instagram_metrics"]
    assert im == {"followers_count": 10.0}
    assert sorted(report.problems) == [
        "instagram_metrics.impressions: not a number (True)",
        "instagram_metrics.profile_views: not a number (nan)",
        "instagram_metrics.reach: not a number ('lots')",
        "instagram_metrics.website_clicks: not a number ([1])",
    ]


def test_extra_keys_are_kept_as_columns():
    report = an.parse_report(row(revenue_metrics={"attributed_revenue": 5, "currency": "EUR", "nested": {"a": 1}}))
    assert report.problems == []
    flat = an.flatten_report(report)
    assert flat["revenue_metrics.currency"] == "EUR"
    assert flat["revenue_metrics.nested.a"] == 1


def test_empty_arrays_and_objects():
    report = an.parse_report(row(media_metrics={"top_performing": [], "by_media_type": {}, "best_post": {}},
                                 insights={"key_findings": [], "recommendations": [], "anomalies": []},
                                 historical_comparison={"changes": {}}))
    assert report.problems == []
    assert an.posts_frame(report).empty
    assert an.changes_frame(report).empty
    assert an.post_fields(report.sections["media_metrics"].get("best_post")).empty


def test_json_stored_as_text_and_double_encoded():
    as_text = json.dumps({"reach": 10})
    double = json.dumps(json.dumps({"attributed_revenue": "7.5"}))
    report = an.parse_report(row(instagram_metrics=as_text, revenue_metrics=double, data_sources='["a", "b"]'))
    assert report.problems == []
    assert report.sections["instagram_metrics"] == {"reach": 10.0}
    assert report.sections["revenue_metrics"] == {"attributed_revenue": 7.5}
    assert report.sections["data_sources"] == ["a", "b"]


def test_malformed_json_drops_that_section_only():
    report = an.parse_report(row(media_metrics='{"avg_likes": 3,', insights="not json"))
    assert report.problems == ["media_metrics: malformed JSON", "insights: malformed JSON"]
    assert "media_metrics" not in report.sections
    assert report.sections["instagram_metrics"]["reach"] == 1200.0


def test_wrong_types_inside_sections():
    report = an.parse_report(row(
        instagram_metrics=[1, 2],
        media_metrics={"top_performing": [{"media_id": 1, "engagement": "9"}, "junk"], "by_media_type": {"IMAGE": 4, "X": "?"}},
        historical_comparison={"changes": {"reach": "up", "impressions": {"current": "5", "previous": 4, "change_pct": "25"}}},
        insights={"key_findings": "one finding", "recommendations": [{"x": 1}, "ok"], "anomalies": 5},
    ))
    assert report.problems == [
        "instagram_metrics: expected a JSON object, got list",
        "media_metrics.top_performing[1]: not an object",
        "media_metrics.by_media_type.X: not a number or object ('?')",
        "historical_comparison.changes.reach: expected an object",
        "insights.recommendations: skipped a dict item",
        "insights.anomalies: expected a list",
    ]
    assert list(an.posts_frame(report)["engagement"]) == [9.0]
    assert list(an.posts_frame(report)["media_id"]) == ["1"]
    assert report.sections["media_metrics"]["by_media_type"] == {"IMAGE": {"count": 4.0}}
    assert report.sections["insights"] == {"key_findings": ["one finding"], "recommendations": ["ok"]}
    ch = an.changes_frame(report)
    assert ch.to_dict("records") == [{"metric": "impressions", "previous": 4.0, "current": 5.0, "change_pct": 25.0,
                                      "trend": "up"}]


def test_bad_dates_are_reported():
    report = an.parse_report(row(report_date="yesterday", start_date=None, end_date=None))
    assert report.report_date is None
    assert report.problems == ["report_date: not a date ('yesterday')"]
    assert report.period == "unknown period"


def test_problem_summary_note():
    good = an.parse_report(row(id="ok"))
    bad1 = an.parse_report(row(id="b1", media_metrics="{"))
    bad2 = an.parse_report(row(id="b2", instagram_metrics={"reach": "x", "impressions": "y"}))
    summary = an.summarize_problems([good, bad1, bad2])
    assert summary.with_problems == 2
    assert summary.kinds == {"malformed JSON": 1, "not a number": 2}
    assert summary.note == ("2 of 3 reports had unusable values; those values were skipped and the rest of each "
                            "report is shown (2 × not a number, 1 × malformed JSON).")
    assert [e["report_id"] for e in summary.examples] == ["b1", "b2", "b2"]
    assert an.summarize_problems([good]).note is None


def test_load_json_edge_cases():
    assert an.load_json(None) == (None, None)
    assert an.load_json("") == (None, None)
    assert an.load_json("null") == (None, None)
    assert an.load_json(b'{"a": 1}') == ({"a": 1}, None)
    assert an.load_json("[1,") == (None, "malformed JSON")


@pytest.mark.parametrize("value,expected", [
    (3, (3.0, True)), (2.5, (2.5, True)), ("1_000", (1000.0, True)), ("", (None, True)), (None, (None, True)),
    (False, (None, False)), ("1e3", (1000.0, True)), (float("inf"), (None, False)), ({"a": 1}, (None, False)),
    (10 ** 400, (None, False)),
])
def test_to_number(value, expected):
    assert an.to_number(value) == expected


# --------------------------------------------------------------------------- KPIs and deltas

def flat(**overrides):
    return an.flatten_report(an.parse_report(row(**overrides)))


def kpi(kpis, key):
    return next(k for k in kpis if k.key == key)


def test_delta_from_explicit_comparison_field():
    k = kpi(an.kpi_deltas(flat(), None), "reach")
    assert (k.value, k.delta, k.delta_pct, k.source) == (1200.0, 200.0, 20.0, an.FROM_COMPARISON)


def test_kpi_board_one_row_per_account_with_values_and_coloured_changes():
    kpis = an.kpi_deltas(flat(), None)
    board = an.kpi_board([("acme", "1–7 Dec", kpis),
                          ("beta", "—", an.kpi_deltas(flat(instagram_metrics={}, historical_comparison=None), None))])
    head, rule, acme, beta = board.splitlines()
    assert head == "| Account | Latest report | " + " | ".join(d.label for d in an.KPIS) + " |"
    assert rule == "|:---|:---|" + "---:|" * len(an.KPIS)
    cells = acme.strip("| ").split(" | ")
    assert cells[0] == "**acme**" and len(cells) == 2 + len(an.KPIS)
    reach = cells[2 + [d.key for d in an.KPIS].index("reach")]
    assert reach == "1,200 :small[:green[\\+20\\.0\u00a0%]]"  # +20 % from historical_comparison, escaped
    assert beta.strip("| ").split(" | ")[2:] == ["—"] * (len(an.KPIS) - 1) + ["\\$250\\.00"]  # no data: a dash
    assert an.kpi_board([]) == ""
    assert an.kpi_board([("acme", "1–7 Dec", kpis)], with_period=False).splitlines()[0].startswith(
        "| Account | Followers |")


def test_kpi_board_changes_down_and_flat_and_without_percent():
    def k(delta, pct, kind="count"):
        return an.Kpi("reach", "Reach", kind, 10.0, delta, pct, an.FROM_PREVIOUS)

    assert an._board_cell(k(-5.0, -33.3)).endswith(":small[:red[\\-33\\.3\u00a0%]]")
    assert ":small[:gray[" in an._board_cell(k(0.0, 0.0))
    assert an._board_cell(k(5.0, None)) == "10 :small[:green[\\+5]]"  # previous was 0: no %, the change itself
    assert an._board_cell(k(None, None)) == "10"
    assert an._board_cell(an.Kpi("r", "Rate", "rate", 6.5, None, None, None)) == "6\\.50\u00a0%"


def test_kpi_board_escapes_untrusted_names_and_periods():
    """A name cannot end its cell early, start a formula-like link or inject Markdown."""
    board = an.kpi_board([("evil|**x**[y](http://e)", "a|b", an.kpi_deltas(flat(), None))])
    row = board.splitlines()[2]
    assert row.startswith("| **evil\\|\\*\\*x\\*\\*\\[y\\]\\(http\\:\u200b//e\\)** | a\\|b | ")
    assert row.count(" | ") == 1 + len(an.KPIS)  # every | of the data is escaped


def test_delta_from_changes_when_no_explicit_field():
    latest = flat(historical_comparison={"changes": {"impressions": {"previous": 2500, "current": 3000}}})
    k = kpi(an.kpi_deltas(latest, None), "impressions")
    assert (k.delta, k.delta_pct, k.source) == (500.0, 20.0, an.FROM_COMPARISON)


def test_delta_from_change_pct_only():
    latest = flat(historical_comparison={"changes": {"profile_views": {"change_pct": 50}}})
    k = kpi(an.kpi_deltas(latest, None), "profile_views")
    assert k.source == an.FROM_COMPARISON
    assert k.delta_pct == 50
    assert k.delta == pytest.approx(30.0)  # 90 now, 60 before


def test_delta_computed_against_previous_report_otherwise():
    latest = flat(historical_comparison=None)
    previous = flat(instagram_metrics={"reach": 1000, "avg_engagement_rate": 5.0},
                    revenue_metrics={"attributed_revenue": "200"})
    kpis = an.kpi_deltas(latest, previous)
    reach, rate, revenue = kpi(kpis, "reach"), kpi(kpis, "avg_engagement_rate"), kpi(kpis, "attributed_revenue")
    assert (reach.delta, reach.delta_pct, reach.source) == (200.0, 20.0, an.FROM_PREVIOUS)
    assert (rate.delta, rate.delta_pct) == (-0.5, -10.0)
    assert (revenue.delta, revenue.delta_pct, revenue.source) == (50.0, 25.0, an.FROM_PREVIOUS)
    followers = kpi(kpis, "followers")
    assert (followers.value, followers.delta, followers.source) == (5000.0, None, None)  # previous lacks it


def test_no_delta_without_comparison_or_previous_and_zero_base():
    kpis = an.kpi_deltas(flat(historical_comparison="{broken"), None)
    assert kpi(kpis, "reach").source is None
    prev = flat(instagram_metrics={"website_clicks": 0})
    k = kpi(an.kpi_deltas(flat(historical_comparison=None), prev), "website_clicks")
    assert (k.delta, k.delta_pct) == (12.0, None)


def test_kpis_are_the_eight_of_the_issue():
    assert [k.label for k in an.kpi_deltas(flat(), None)] == [
        "Followers", "Follower growth", "Reach", "Impressions", "Profile views", "Website clicks",
        "Avg engagement rate", "Attributed revenue"]


def test_formatting():
    assert an.fmt_value(1234.0, "count") == "1,234"
    assert an.fmt_value(4.5, "rate") == "4.50 %"
    assert an.fmt_value(12.5, "money") == "$12.50"
    assert an.fmt_value(None, "count") == "—"
    k = an.Kpi("r", "Reach", "count", 1200.0, -200.0, -14.29, an.FROM_PREVIOUS)
    assert an.fmt_delta(k) == "-200 (-14.3 %)"
    k = an.Kpi("m", "Revenue", "money", 10.0, 2.5, None, an.FROM_PREVIOUS)
    assert an.fmt_delta(k) == "+$2.50"
    assert an.fmt_delta(an.Kpi("x", "X", "count", 1.0, None, None, None)) is None


def test_latest_and_previous_per_account():
    reports = [an.parse_report(row(id=f"r{i}", business_account_id=acc,
                                   report_date=datetime(2026, 11, i, tzinfo=UTC)))
               for i, acc in ((1, "a"), (2, "b"), (3, "a"), (4, "a"))]
    df = an.reports_frame(reports)
    latest, previous = an.latest_and_previous(df, "a")
    assert (latest["id"], previous["id"]) == ("r4", "r3")
    latest, previous = an.latest_and_previous(df, "b")
    assert (latest["id"], previous) == ("r2", None)
    assert an.latest_and_previous(df, "zzz") == (None, None)


# --------------------------------------------------------------------------- charts data, comparison

def daily(i, acc="a", **ig):
    d = date(2026, 11, i)
    return an.parse_report(row(id=f"{acc}{i}", business_account_id=acc, report_type="daily",
                               report_date=datetime(2026, 11, i + 1, 2, tzinfo=UTC),
                               start_date=d.isoformat(), end_date=d.isoformat(),
                               instagram_metrics=ig, revenue_metrics={}, media_metrics={}))


def test_long_series_drops_missing_values():
    df = an.reports_frame([daily(1, reach=10), daily(2, reach=None, impressions=5)])
    long = an.long_series(df, ["instagram_metrics.reach", "instagram_metrics.impressions", "nope.x"])
    assert long[["metric", "value", "period"]].to_dict("records") == [
        {"metric": "reach", "value": 10.0, "period": "2026-11-01"},
        {"metric": "impressions", "value": 5.0, "period": "2026-11-02"},
    ]


def test_media_type_breakdown_sums_counts_and_weights_rates():
    r1 = an.parse_report(row(id="1", media_metrics={"by_media_type": {"VIDEO": {"count": 1, "avg_engagement_rate": 2.0}}}))
    r2 = an.parse_report(row(id="2", report_date=datetime(2026, 11, 30, tzinfo=UTC),
                             media_metrics={"by_media_type": {"VIDEO": {"count": 3, "avg_engagement_rate": 6.0},
                                                              "IMAGE": {"count": 2}}}))
    out = an.media_type_breakdown(an.reports_frame([r1, r2]))
    got = {(r["media_type"], r["field"]): r["value"] for r in out.to_dict("records")}
    assert got == {("VIDEO", "count"): 4.0, ("VIDEO", "avg_engagement_rate"): 5.0, ("IMAGE", "count"): 2.0}


def test_compare_periods_sums_flows_averages_rates_takes_last_stock():
    reports = [daily(i, reach=100 * i, followers_count=1000 + i, avg_engagement_rate=float(i)) for i in range(1, 5)]
    table = an.compare_periods(an.reports_frame(reports), (date(2026, 11, 1), date(2026, 11, 2)),
                               (date(2026, 11, 3), date(2026, 11, 4)))
    got = table.set_index("metric")
    assert got.loc["Reach", ["a", "b", "change"]].tolist() == [300.0, 700.0, 400.0]
    assert got.loc["Reach", "change_pct"] == pytest.approx(400 / 3)
    assert got.loc["Followers (end of period)", ["a", "b"]].tolist() == [1002.0, 1004.0]
    assert got.loc["Avg engagement rate (%)", ["a", "b"]].tolist() == [1.5, 3.5]
    assert got.loc["Reach", "reports_a"] == 2
    assert got.loc["Attributed revenue ($)", "a"] is None or math.isnan(got.loc["Attributed revenue ($)", "a"])


def test_in_period_needs_the_whole_report_period_inside():
    weekly = an.parse_report(row())  # 2026-11-16 .. 2026-11-22
    df = an.reports_frame([weekly])
    assert len(an.in_period(df, date(2026, 11, 16), date(2026, 11, 22))) == 1
    assert len(an.in_period(df, date(2026, 11, 17), date(2026, 11, 30))) == 0


def test_changes_frame_sorted_and_trend_filled():
    report = an.parse_report(row(historical_comparison={"changes": {
        "reach": {"change_pct": 5}, "likes": {"change_pct": -3, "trend": "down"}, "bad": {"previous": 1}}}))
    ch = an.changes_frame(report)
    assert ch[["metric", "change_pct", "trend"]].to_dict("records") == [
        {"metric": "likes", "change_pct": -3.0, "trend": "down"},
        {"metric": "reach", "change_pct": 5.0, "trend": "up"},
    ]


def test_csv_columns_order():
    df = an.reports_frame([an.parse_report(row())])
    cols = list(an.csv_columns(df).columns)
    assert cols[:8] == list(an.META_COLUMNS)
    assert cols[-1] == "problems"
    first_of = {s: next(i for i, c in enumerate(cols) if c.startswith(s + ".")) for s in
                ("instagram_metrics", "media_metrics", "revenue_metrics", "historical_comparison", "insights")}
    assert list(first_of.values()) == sorted(first_of.values())


def test_day_bounds():
    start, end = an.day_bounds(date(2026, 11, 1), date(2026, 11, 7))
    assert (start.isoformat(), end.isoformat()) == ("2026-11-01T00:00:00+00:00", "2026-11-08T00:00:00+00:00")


def test_aggregate_period_of_one_account():
    reports = [daily(1, reach=100, followers_count=10), daily(2, reach="oops", followers_count=None), daily(3, reach=50)]
    got = an.aggregate_period(an.reports_frame(reports))
    assert got["instagram_metrics.reach"] == 150.0
    assert got["instagram_metrics.followers_count"] == 10.0  # the last value there is
    assert got["revenue_metrics.attributed_revenue"] is None
    assert an.aggregate_period(an.reports_frame([]))["instagram_metrics.reach"] is None


def test_md_escape_also_breaks_icon_and_emoji_directives():
    from lib.core.text import md_escape

    text = md_escape(":material/home: **x** :smile:")
    assert ":material/home:" not in text and ":smile:" not in text
    assert text.replace("\u200b", "").replace("\\", "") == ":material/home: **x** :smile:"


def test_compare_periods_per_report_when_coverage_differs():
    # A: 3 daily reports of 100 posts each; B: 2 reports of 100 (a day missing): not a fall of a third
    reports = [daily(i, reach=100) for i in range(1, 4)] + [daily(i, reach=100) for i in range(4, 6)]
    table = an.compare_periods(an.reports_frame(reports), (date(2026, 11, 1), date(2026, 11, 3)),
                               (date(2026, 11, 4), date(2026, 11, 6)))
    reach = table.set_index("metric").loc["Reach"]
    assert [reach["a"], reach["b"], reach["change"]] == [300.0, 200.0, -100.0]  # the totals stay the totals
    assert reach["change_pct"] == pytest.approx(0.0) and reach["basis"] == "per report (3 vs 2)"
    same = an.compare_periods(an.reports_frame(reports[:4]), (date(2026, 11, 1), date(2026, 11, 2)),
                              (date(2026, 11, 3), date(2026, 11, 4))).set_index("metric").loc["Reach"]
    assert same["basis"] == "totals"


def test_one_catalogue_names_every_metric_the_same_everywhere():
    """The KPI cards, the period comparison, the charts and the anomaly detection read their labels
    from lib.analytics.catalogue: a metric reads the same wherever it appears."""
    from lib.analytics import anomalies, catalogue
    from lib.ui import metrics as page

    for d in an.KPIS:
        assert d.label == catalogue.metric(d.column).name and d.kind == catalogue.metric(d.column).kind
    compared = {col: label for col, label, _ in an.COMPARE_METRICS}
    assert compared["instagram_metrics.followers_count"] == "Followers (end of period)"
    assert compared["revenue_metrics.avg_order_value"] == "Avg order value ($)"
    charts = {**{label: col for label, (col, _) in page.IG_METRICS.items()}, **page.ENGAGEMENT, **page.REVENUE,
              **page.MEDIA}
    for label, col in charts.items():
        assert label == catalogue.metric(col).label
    for col, (label, _) in anomalies.METRICS.items():
        assert label == catalogue.metric(col).label
    assert len({m.column for m in catalogue.METRICS}) == len(catalogue.METRICS)
