"""Showing untrusted text inside Markdown-rendering elements (captions, labels, metrics)."""
from lib.core.text import md_escape  # noqa: F401  (the rule lives in lib/core/text.py)
from lib.core.timeutil import fmt_ago, utcnow


def ago(value) -> str:
    """'12 s ago' / 'in 4 min' from the real current time. Pages round their cached "now" down (5 or
    30 s) for cache keys; formatting with that time would show a fresh event "in 4 s"."""
    return fmt_ago(value, utcnow())

