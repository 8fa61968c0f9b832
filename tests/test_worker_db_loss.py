"""PostgreSQL stops in the middle of a batch (right after Instagram accepted the first DM): the next
tick that reaches the database records that DM as sent and puts back the rows never attempted, so
none waits for the 10-minute lease and none is sent twice. A real PostgreSQL of its own, stopped and
started; the sandbox Graph API over HTTP."""
from __future__ import annotations

import time

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log
from lib.core.schema import post_queue as pq
from tests.support.worker import add_account, add_row, client_for, sandbox, statuses, worker_settings  # noqa: F401
from worker.tick import TickMemory, run_tick


def test_a_batch_cut_by_a_database_loss_is_finished_when_it_returns(own_pg, sandbox):
    eng = make_engine(own_pg.url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        for i in range(5):
            add_row(conn, acc, "send_dm", {"recipient_id": f"9{i}", "message_text": f"db loss {i}"})
    settings = worker_settings(own_pg.url, sandbox, batch_size=5)
    client = client_for(settings)

    def stop_the_database(method, template, status, seconds, headers):
        if status == 200 and "messages" in template:
            client.observers.remove(stop_the_database)
            own_pg.stop()

    client.observers.append(stop_the_database)
    memory = TickMemory()  # the worker process's: what the cut tick leaves to the next one
    cut = run_tick(eng, settings, client, memory=memory)
    assert cut.error and "database unavailable" in cut.error
    assert len(sandbox.stats()["sent_messages"]) == 1  # Instagram has the first DM

    own_pg.start()
    time.sleep(1.2)  # past lib.core.db.PING_AFTER_IDLE_S: the pool finds its dead connections by the ping
    back = run_tick(eng, settings, client, memory=memory)
    assert back.error is None
    assert back.released == 4 and back.sent == 5, back
    with eng.connect() as conn:
        assert statuses(conn) == {"sent": 5}
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                            .where(audit_log.c.event_type == "dm_sent")).scalar() == 5
        assert conn.execute(sa.select(sa.func.count()).where(pq.c.error.is_not(None))).scalar() == 0
    texts = sorted(m["text"] for m in sandbox.stats()["sent_messages"])
    assert texts == [f"db loss {i}" for i in range(5)]  # each DM once: none sent again
    eng.dispose()
