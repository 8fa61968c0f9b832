"""Pure rules for showing long untrusted values shortened (lib.core.text.clip / clip_json)."""
from lib.core.text import clip, clip_json


def test_clip_keeps_short_text_and_says_how_much_was_cut():
    assert clip("abc", 5) == "abc"
    assert clip(None) == ""
    out = clip("x" * 100_000, 10)
    assert out.startswith("x" * 10) and "99,990 more characters not shown" in out and len(out) < 60


def test_clip_json_cuts_strings_depth_and_width():
    deep = {"leaf": "y"}
    for _ in range(500):
        deep = {"child": deep}
    got = clip_json({"blob": "A" * 10_000_000, "deep": deep, "many": list(range(1000)), "n": 1.5, "b": None},
                    max_string=20, max_depth=5, max_items=10)
    assert got["blob"].startswith("A" * 20) and "more characters not shown" in got["blob"]
    assert got["many"][:10] == list(range(10)) and got["many"][-1] == "[990 more items not shown]"
    node, depth = got["deep"], 1
    while isinstance(node, dict):
        node, depth = node["child"], depth + 1
    assert depth == 5 and node == "[object nested deeper than 5 levels not shown]"
    assert got["n"] == 1.5 and got["b"] is None
    wide = clip_json({str(i): i for i in range(30)}, max_items=10)
    assert len(wide) == 11 and wide["…"] == "[20 more keys not shown]"
