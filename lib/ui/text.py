"""Showing untrusted text inside Markdown-rendering elements (captions, labels, metrics)."""
from lib.text import md_escape  # noqa: F401  (the rule lives in lib/text.py)
