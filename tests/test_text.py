from lib.core.text import escape_markdown, md_escape


def test_md_escape_neutralises_markdown_and_html():
    assert md_escape("**bold** [x](javascript:alert(1)) <b>").replace("\u200b", "") == (
        r"\*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \<b\>")
    assert md_escape("a\nb") == "a b"
    assert md_escape(42) == "42"


def test_escape_markdown_keeps_lines_and_breaks_icon_codes():
    text, at_start = escape_markdown("# title\n  :material/home: x")
    assert text == "\\# title  \n\u00a0\u00a0\\:\u200bmaterial/home\\:\u200b x"
    assert at_start is False


def test_escape_markdown_keep_lists():
    from lib.core.text import escape_markdown_keep_lists as keep
    out = keep("Done:\n- a **b**\n* [c](http://x)\n1. one\nend")
    lines = out.split("\n")
    assert lines[1] == "- a \\*\\*b\\*\\*" and lines[2].startswith("- \\[c\\]")
    assert lines[3] == "1. one" and lines[4] == ""  # a blank line closes the list before "end"
    assert "**" not in out.replace("\\*\\*", "") and "](" not in out
    assert keep("-not a list") .startswith("\\-not")
