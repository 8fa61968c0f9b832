from lib.text import escape_markdown, md_escape


def test_md_escape_neutralises_markdown_and_html():
    assert md_escape("**bold** [x](javascript:alert(1)) <b>").replace("\u200b", "") == (
        r"\*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \<b\>")
    assert md_escape("a\nb") == "a b"
    assert md_escape(42) == "42"


def test_escape_markdown_keeps_lines_and_breaks_icon_codes():
    text, at_start = escape_markdown("# title\n  :material/home: x")
    assert text == "\\# title  \n\u00a0\u00a0\\:\u200bmaterial/home\\:\u200b x"
    assert at_start is False
