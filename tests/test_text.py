from lib.ui.text import md_escape


def test_md_escape_neutralises_markdown_and_html():
    assert md_escape("**bold** [x](javascript:alert(1)) <b>") == r"\*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \<b\>"
    assert md_escape("a\nb") == "a b"
    assert md_escape(42) == "42"
