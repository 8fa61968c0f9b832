"""Column-wise redaction (exports): every cell comes out exactly as the per-value rule makes it.

Pure. The vectorised pre-check only decides which cells the rule runs on, so a pre-check that misses
a case would show here as a cell that still holds its secret; the corpus has an example of every
rule of lib/core/redact.py, upper/lower case, non-ASCII look-alikes Python's re folds (ſ for s, K for k),
JSON escapes, and random mixtures of them with ordinary text."""
from __future__ import annotations

import json
import random

from lib.core.redact import REDACTED, redact, redact_json_texts, redact_text, redact_texts

TOKEN = "EAAB" + "Z" * 40
IG_TOKEN = "IGQV" + "a1" * 30

TEXTS = [
    None, "", "ordinary failure (#100) Invalid parameter", "(#190) Error validating access token: Session expired",
    f"GET https://graph.facebook.com/v21.0/me?access_token={TOKEN}&fields=id failed",
    f"token {TOKEN} rejected", f"eaa{'b' * 25} lower-case", "Authorization: Bearer abc.def-ghi",
    "connect failed for postgresql://app:Pa55#w0rd/Zq@db:5432/prod", "redis://:s3cret@cache:6379/0",
    "password=hunter2 and pwd: x1", "PASSWORD = Hunter2", "client_secret=abc&x=1", "SECRET:topsecret",
    "paſſword=hunter2 (a long s, which Python's re.I reads as s)", "pwd=ſecret", "Bearer\tabc",
    "sqlite:///tmp/x.db", "no scheme user:pw@host", "ünïcödé text with 🎉 and no secret",
    "ünïcödé with password=geheim", "=HYPERLINK(\"http://evil.example\")",
]

DOCS = [
    {"n": 1, "queue_id": "q1"},
    {"access_token": TOKEN, "caption": "hi"},
    {"payload": {"Password": "hunter2", "list": [{"api_key": "k"}, {"apiKey": "k2"}]}},
    {"url": f"https://x/?access_token={TOKEN}", "header": "Bearer abc"},
    {"value": TOKEN}, {"value": IG_TOKEN}, {"client-secret": "s"}, {"x_cookie": "c"},
    {"paſſword": "hunter2"}, {"Private_Key": "pk"}, {"note": "ünïcödé 🎉", "ok": True},
    {"refresh_token": "", "token": None}, [{"signature": "sig"}], "just a string", 12,
    {"api_\u212aey": "k3"}, {"ap\u0130_key": "k4"}, {"cookıe": "c2"},  # Kelvin sign, dotted/dotless i
]


def _json_cells() -> list[str | None]:
    cells: list[str | None] = [None, ""]
    for d in DOCS:
        cells.append(json.dumps(d))
        cells.append(json.dumps(d, ensure_ascii=False))
    cells.append('{"\\u0074oken": "t0p", "n": 1}')  # a key in JSON escapes: "token" once parsed
    cells.append('{"c\\u0061ption": "\\u0045AAB' + "Z" * 30 + '"}')
    cells.append(f"not json, but {TOKEN} inside")
    cells.append("{broken json password=hunter2")
    return cells


def _mixtures(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = [t for t in TEXTS if t] + ["x", " ", "&", "=", ":", "@", "//", "ſ", "K", "İ", "ı", "é"]
    return ["".join(rng.choice(parts)[: rng.randint(1, 40)] for _ in range(rng.randint(1, 6))) for _ in range(n)]


def test_text_column_is_redact_text_of_every_cell():
    cells = TEXTS + _mixtures(3000, seed=7)
    assert redact_texts(cells) == [redact_text(v) for v in cells]
    assert any(redact_text(v) != v for v in cells)  # the corpus has secrets to redact


def test_json_column_is_redact_of_every_cell():
    cells = _json_cells() + [json.dumps({"k": m, m[:12]: 1}) for m in _mixtures(1500, seed=11)]
    out = redact_json_texts(cells)
    assert len(out) == len(cells)
    for before, after in zip(cells, out):
        if before in (None, ""):
            assert after == before
            continue
        try:
            value = json.loads(before)
        except ValueError:
            assert after == redact_text(before)
            continue
        assert json.loads(after) == redact(value), before
    joined = "\n".join(v for v in out if v)
    assert TOKEN not in joined and IG_TOKEN not in joined and "t0p" not in joined
    docs = "\n".join(v for v in out[: 2 + 2 * len(DOCS)] if v)  # secret-named keys: "hunter2" only under them
    assert "hunter2" not in docs and REDACTED in docs


def test_cells_without_a_suspect_stay_as_they_are():
    cells = [json.dumps({"n": i, "caption": f"post {i} \u27a1\ufe0f ünï"}) for i in range(100)]  # escaped emoji
    assert redact_json_texts(cells) == cells  # the database's own JSON text, not re-serialised
    texts = [f"(#100) Invalid parameter {i}" for i in range(100)] + [None]
    assert redact_texts(texts) == texts


def test_a_column_that_is_not_all_text():
    assert redact_texts([None, 5, f"access_token={TOKEN}"]) == [None, "5", "access_token=" + REDACTED]


def test_the_four_characters_python_folds_to_ascii_letters():
    # the column pre-check relies on it: RE2 and Python's re.I agree on every other character
    import re
    import sys

    from lib.core import redact as r

    letter = re.compile("[a-z]", re.I)
    found = {chr(c) for c in range(128, sys.maxunicode + 1) if letter.match(chr(c))}
    assert found == set(r._RE_I_FOLDS.strip("[]"))
