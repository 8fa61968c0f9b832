"""The one metric catalogue: every report column the Metrics page, the period comparisons, the KPI cards,
the weekly digest and the anomaly detection name, with what a person reads, its unit and how it adds up
over a period of several reports."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    column: str  # the flattened report column (section.field)
    name: str  # what a person reads, without the unit
    unit: str | None = None  # "%" or "$": part of chart and table labels (KPI cards format it into the value)
    period: str = "sum"  # over several reports: sum | mean | last
    kind: str = "count"  # count | rate | money: how a value is formatted, which axis a chart gives it

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


METRICS = (
    Metric("instagram_metrics.followers_count", "Followers", period="last"),
    Metric("instagram_metrics.follower_growth", "Follower growth"),
    Metric("instagram_metrics.reach", "Reach"),
    Metric("instagram_metrics.impressions", "Impressions"),
    Metric("instagram_metrics.profile_views", "Profile views"),
    Metric("instagram_metrics.website_clicks", "Website clicks"),
    Metric("instagram_metrics.posts_published", "Posts published"),
    Metric("instagram_metrics.total_likes", "Likes"),
    Metric("instagram_metrics.total_comments", "Comments"),
    Metric("instagram_metrics.total_saves", "Saves"),
    Metric("instagram_metrics.total_shares", "Shares"),
    Metric("instagram_metrics.avg_engagement_rate", "Avg engagement rate", "%", "mean", "rate"),
    Metric("media_metrics.avg_likes", "Avg likes per post", period="mean"),
    Metric("media_metrics.avg_comments", "Avg comments per post", period="mean"),
    Metric("media_metrics.avg_reach", "Avg reach per post", period="mean"),
    Metric("revenue_metrics.attributed_revenue", "Attributed revenue", "$", kind="money"),
    Metric("revenue_metrics.attributed_orders", "Attributed orders"),
    Metric("revenue_metrics.avg_order_value", "Avg order value", "$", "mean", "money"),
    Metric("revenue_metrics.conversion_rate", "Conversion rate", period="mean", kind="rate"),
)
BY_COLUMN = {m.column: m for m in METRICS}


def metric(column: str) -> Metric:
    return BY_COLUMN[column]


def by_label(columns: Iterable[str]) -> dict[str, str]:
    """{label: column} for the given columns, in their order: a chart's series."""
    return {BY_COLUMN[c].label: c for c in columns}
