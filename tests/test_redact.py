"""Credentials never reach a log line (pure: a real logging handler, no mocks)."""
from __future__ import annotations

import io
import logging

from lib.core.redact import install_log_redaction, redact_text

TOKEN = "EAAB" + "Q" * 40


def test_urllib3_debug_lines_and_tracebacks_are_redacted():
    stream = io.StringIO()
    root = logging.getLogger("redact-test-root")
    root.propagate = False
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    install_log_redaction(root)
    child = root.getChild("urllib3.connectionpool")
    try:
        child.debug('%s://%s:%s "%s %s %s" %s %s', "https", "graph.facebook.com", 443, "GET",
                    f"/v21.0/123/conversations?platform=instagram&user_id=9&access_token={TOKEN}", "HTTP/1.1", 200, 512)
        try:
            raise RuntimeError("connect failed for postgresql://app:Pa55#w0rd/Zq@db:5432/prod")
        except RuntimeError:
            child.exception("tick failed")
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert "graph.facebook.com" in out and "access_token=[redacted]" in out
    assert TOKEN not in out and "Pa55" not in out and "db:5432/prod" in out


def test_redact_text_leaves_ordinary_errors_alone():
    text = "(#190) Error validating access token: Session has expired on Tuesday"
    assert redact_text(text) == text
    assert redact_text(None) is None
