"""instagram_business_accounts: the columns DESIGN.md pins, never the access token for display."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from lib.schema import instagram_business_accounts as accounts


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    username: str
    is_connected: bool


def list_accounts(conn: sa.Connection) -> list[Account]:
    rows = conn.execute(
        sa.select(accounts.c.id, accounts.c.username, accounts.c.is_connected).order_by(accounts.c.username)
    )
    return [Account(r.id, r.username or str(r.id), bool(r.is_connected)) for r in rows]
