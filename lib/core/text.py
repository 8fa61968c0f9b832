"""Untrusted text (error messages, chat answers, user names) shown literally inside
Markdown-rendering elements. Pure: used by lib/ui and by the chat's streaming renderer."""
from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=^])")
_ZWSP = "\u200b"


def escape_markdown(text: str, at_line_start: bool = True) -> tuple[str, bool]:
    """Text that Markdown renders literally: every special character escaped, line breaks kept,
    leading spaces kept (no code blocks). Works chunk by chunk: pass and keep `at_line_start`.

    A zero-width space follows every colon: Streamlit expands `:material/x:` icons and
    `:emoji:` shortcodes even when the colons are backslash-escaped. One follows every `@` and the
    `www` of `www.` as well: GitHub-flavoured Markdown turns bare e-mail addresses and `www.` names
    into links after the escapes are read (`http://` is already broken by the colon's).
    """
    out = []
    for i, ch in enumerate(text):
        if ch == "\n":
            out.append("  \n")
            at_line_start = True
            continue
        if ch == " " and at_line_start:
            out.append("\u00a0")
            continue
        at_line_start = False
        escaped = _MD_SPECIAL.sub(r"\\\1", ch)
        if ch == "." and text[max(0, i - 3):i].lower() == "www":
            escaped = _ZWSP + escaped
        out.append(escaped + _ZWSP if ch in ":@" else escaped)
    return "".join(out), at_line_start


def plotly_text(text: object) -> str:
    """Untrusted text for a Plotly label (axis categories, legend names, hover text, titles):
    Plotly interprets a few HTML tags (<b>, <br>, <a href>, <span style>), so < > & and quotes are
    escaped. The one function every chart label built from data goes through."""
    return html.escape(str(text), quote=True)


def md_escape(text: object) -> str:
    """One line of untrusted text, escaped (line breaks become spaces)."""
    return escape_markdown(str(text).replace("\r", " ").replace("\n", " "))[0]


# -- long untrusted values: shown shortened, never whole ------------------------------------------

TEXT_LIMIT = 5_000  # characters of one error text / message shown in a detail view
JSON_STRING_LIMIT = 500  # characters of one string inside a JSON value shown with st.json
JSON_DEPTH_LIMIT = 12  # nesting levels of a JSON value shown with st.json
JSON_ITEMS_LIMIT = 100  # keys of one object / items of one list shown with st.json


def clip(text: object, limit: int = TEXT_LIMIT) -> str:
    """The text, cut to `limit` characters with a note saying how much was left out."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters not shown]"


def clip_json(value: object, *, max_string: int = JSON_STRING_LIMIT, max_depth: int = JSON_DEPTH_LIMIT,
              max_items: int = JSON_ITEMS_LIMIT, _depth: int = 0) -> object:
    """A JSON value made small enough to render: long strings clipped, deep nesting and long
    lists/objects cut, each cut marked in place. Iterative callers get plain JSON types back."""
    if isinstance(value, str):
        return clip(value, max_string)
    if isinstance(value, (dict, list, tuple)):
        if _depth >= max_depth:
            kind = "object" if isinstance(value, dict) else "list"
            return f"[{kind} nested deeper than {max_depth} levels not shown]"
        kw = dict(max_string=max_string, max_depth=max_depth, max_items=max_items, _depth=_depth + 1)
        if isinstance(value, dict):
            out: dict[object, object] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= max_items:
                    out["…"] = f"[{len(value) - max_items:,} more keys not shown]"
                    break
                out[clip(k, max_string)] = clip_json(v, **kw)
            return out
        items = [clip_json(v, **kw) for v in list(value)[:max_items]]
        if len(value) > max_items:
            items.append(f"[{len(value) - max_items:,} more items not shown]")
        return items
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clip(value, max_string)


_LIST_ITEM = re.compile(r"^( {0,6})([-*+]|\d{1,3}[.)]) +(\S.*)$")


def escape_markdown_keep_lists(text: str) -> str:
    """Like escape_markdown, except that list items ("- x", "* x", "1. x") stay lists: the marker is
    kept and the item's text is escaped. For answers written in Markdown by another service (the
    Oversight Brain): its lists read as lists, while nothing else in it is interpreted."""
    out, in_list = [], False
    for line in text.replace("\r\n", "\n").split("\n"):
        m = _LIST_ITEM.match(line)
        if m:
            indent, marker, rest = m.groups()
            out.append(f"{indent}{'-' if marker in '*+' else marker} {escape_markdown(rest)[0]}")
            in_list = True
            continue
        if in_list and line.strip():
            out.append("")  # a blank line ends the list (else the line would join the last item)
        in_list = False
        out.append(escape_markdown(line)[0] + "  ")  # a line break, as escape_markdown keeps them
    return "\n".join(out).rstrip()
