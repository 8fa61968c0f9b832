"""md_escape breaks what GitHub-flavoured Markdown would link by itself after reading the escapes:
bare e-mail addresses, www. names and scheme URLs (pure; the browser proof is
tests/e2e/test_markdown_from_data_e2e.py)."""
from lib.core.text import md_escape

ZWSP = "\u200b"


def test_autolink_triggers_are_broken_and_the_text_reads_the_same():
    for text, broken in (("ops@example.com", "@" + ZWSP), ("see www.evil.example now", "www" + ZWSP),
                         ("WWW.EVIL.EXAMPLE", "WWW" + ZWSP), ("https://evil.example", ":" + ZWSP)):
        out = md_escape(text)
        assert broken in out, (text, out)
        assert out.replace(ZWSP, "").replace("\\", "") == text
    assert md_escape("a.b") == "a\\.b"  # a dot elsewhere gets no zero-width space
