"""Showing untrusted text inside Markdown-rendering elements (captions, labels, metrics)."""
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$:])")


def md_escape(text: object) -> str:
    """Backslash-escape Markdown so a user name or error message shows literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")
