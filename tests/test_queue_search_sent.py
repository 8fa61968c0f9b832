"""Finding queue rows by what was sent (lib.queue.reads.search_sent) on SQLite, PostgreSQL and the user's schema."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from lib.core.db import QUEUE_TRIGRAM_INDEX
from lib.core.timeutil import utcnow
from lib.queue.reads import search_sent
from lib.queue.rules import SENT_SEARCH_CAP, SENT_SEARCH_SHOWN
from tests.support.queue_rows import add_account, insert_rows, queue_row


@pytest.fixture
def rows(engine):
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        alpha, beta = add_account(conn, "alpha", now), add_account(conn, "beta", now)
        made = {
            "dm_sent": queue_row(account=alpha, now=now, status="sent", action_type="send_dm", age_min=50,
                                 payload={"recipient_id": "1784-RECIP-0042", "message_text": "Your order shipped"}),
            "reply_dlq": queue_row(account=alpha, now=now, status="dlq", age_min=5,
                                   payload={"comment_id": "cmt_98765", "reply_text": "Thanks for asking!", "post_id": "p1"}),
            "reply_pending": queue_row(account=beta, now=now, status="pending", age_min=1,
                                       payload={"comment_id": "cmt_11111", "reply_text": "THANKS a lot", "post_id": "p2"}),
            "conv": queue_row(account=beta, now=now, status="failed", action_type="reply_dm", age_min=20,
                              payload={"conversation_id": "t_5550001", "message_text": "100% cotton",
                                       "access_token": "EAAsecretsecretsecret"}),
        }
        insert_rows(conn, list(made.values()))
    return {k: v["id"] for k, v in made.items()}, alpha, beta


def found(engine, text, **kw):
    with engine.connect() as conn:
        return search_sent(conn, text, **kw)


def test_ids_and_text_of_any_status(engine, rows):
    ids, alpha, beta = rows
    assert [r["id"] for r in found(engine, "1784-recip-0042").rows] == [ids["dm_sent"]]  # sent rows too
    assert [r["id"] for r in found(engine, "cmt_98765").rows] == [ids["reply_dlq"]]
    assert [r["id"] for r in found(engine, "t_5550001").rows] == [ids["conv"]]
    # words of the text, any case, newest first, whatever the status
    assert [r["id"] for r in found(engine, "thanks").rows] == [ids["reply_pending"], ids["reply_dlq"]]
    assert [r["id"] for r in found(engine, "thanks", account_id=alpha).rows] == [ids["reply_dlq"]]


def test_wildcards_are_literal_and_short_text_finds_nothing(engine, rows):
    ids, _, _ = rows
    assert [r["id"] for r in found(engine, "100%").rows] == [ids["conv"]]
    assert found(engine, "cmt_%").rows == []  # '%' and '_' are characters, not patterns
    assert found(engine, "zz").rows == [] and found(engine, "   ").rows == []


def test_accented_words(engine):
    now = utcnow()
    with engine.begin() as conn:
        acc = add_account(conn, "delta", now)
        (rid,) = insert_rows(conn, [queue_row(account=acc, now=now, payload={"reply_text": "Merci, le café est offert"})])
    assert [r["id"] for r in found(engine, "café est").rows] == [rid]


def test_secrets_are_redacted_in_what_is_returned(engine, rows):
    ids, _, _ = rows
    (row,) = found(engine, "t_5550001").rows
    assert "EAAsecret" not in str(row["payload"]) and row["payload"]["message_text"] == "100% cotton"


def test_a_common_word_is_bounded(engine):
    now = utcnow()
    with engine.begin() as conn:
        acc = add_account(conn, "gamma", now)
        insert_rows(conn, [queue_row(account=acc, now=now, status="sent", age_min=i,
                                     payload={"comment_id": f"c{i}", "reply_text": "see you soon"})
                           for i in range(SENT_SEARCH_CAP + 5)])
    result = found(engine, "see you")
    assert result.more and len(result.rows) == SENT_SEARCH_SHOWN
    stamps = [r["created_at"] for r in result.rows]
    assert stamps == sorted(stamps, reverse=True)


def test_postgresql_has_the_trigram_index(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no trigram index: the scan stops at the cap")
    with engine.connect() as conn:
        have = conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
        names = {i["name"] for i in sa.inspect(conn).get_indexes("post_queue")}
    if have is None:
        pytest.skip("pg_trgm is not installed on this server")
    assert QUEUE_TRIGRAM_INDEX in names
