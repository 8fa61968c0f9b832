"""Untrusted text (error messages, chat answers, user names) shown literally inside
Markdown-rendering elements. Pure: used by lib/ui and by the chat's streaming renderer."""
from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=^])")
_ZWSP = "\u200b"


def escape_markdown(text: str, at_line_start: bool = True) -> tuple[str, bool]:
    """Text that Markdown renders literally: every special character escaped, line breaks kept,
    leading spaces kept (no code blocks). Works chunk by chunk: pass and keep `at_line_start`.

    A zero-width space follows every colon: Streamlit expands `:material/x:` icons and
    `:emoji:` shortcodes even when the colons are backslash-escaped.
    """
    out = []
    for ch in text:
        if ch == "\n":
            out.append("  \n")
            at_line_start = True
            continue
        if ch == " " and at_line_start:
            out.append("\u00a0")
            continue
        at_line_start = False
        escaped = _MD_SPECIAL.sub(r"\\\1", ch)
        out.append(escaped + _ZWSP if ch == ":" else escaped)
    return "".join(out), at_line_start


def md_escape(text: object) -> str:
    """One line of untrusted text, escaped (line breaks become spaces)."""
    return escape_markdown(str(text).replace("\r", " ").replace("\n", " "))[0]
