"""lib/ui/charts.py: the one bucketed bar chart of the Activity Feed and System Alerts."""
import json

from streamlit.testing.v1 import AppTest


def _chart_script(counts, bucket):
    from zoneinfo import ZoneInfo

    from lib.ui.charts import bucketed_bar_chart

    bucketed_bar_chart(counts, bucket=bucket, tz=ZoneInfo("Europe/Berlin"), series="kind",
                       colors={"b": "#111111", "a": "#222222"}, key="c", y_title="per bucket", height=200,
                       order=("b", "a"))


def spec_of(counts, bucket) -> dict:
    at = AppTest.from_function(_chart_script, args=(counts, bucket), default_timeout=20)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_one_bar_names_its_whole_bucket():
    for bucket, ms in (("day", 86_400_000), ("hour", 3_600_000)):
        spec = spec_of([{"bucket": "2026-12-01T10:00:00+00:00", "kind": "a", "count": 3}], bucket)
        axis = spec["layout"]["xaxis"]
        assert axis["dtick"] == ms and axis["tickformat"] == ("%b %d" if bucket == "day" else "%H:%M\n%b %d")
        assert spec["data"][0]["x"][0].startswith("2026-12-01T11:00:00")  # shown in the display timezone


def test_series_in_the_given_order_stacked_and_escaped():
    counts = [{"bucket": f"2026-12-01T{h:02d}:00:00+00:00", "kind": k, "count": h} for h in (1, 2) for k in ("a", "b",
                                                                                                             "<i>x</i>")]
    spec = spec_of(counts, "hour")
    assert [t["name"] for t in spec["data"]] == ["b", "a", "&lt;i&gt;x&lt;/i&gt;"]  # order first, then the rest
    assert spec["layout"]["barmode"] == "stack" and "dtick" not in spec["layout"]["xaxis"]  # several bars: auto ticks
    assert spec["data"][0]["marker"]["color"] == "#111111"
