"""`python -m lib.db`: create the configured database's missing tables and indexes (never drops or alters).

The command only; the engine, initialisation and transactions live in lib/core/db.py.
"""
from lib.core.db import init_db, make_engine
from lib.core.settings import load_settings


def main() -> None:
    settings = load_settings()
    rep = init_db(make_engine(settings.database_url))
    print(f"database: {settings.masked_database_url}")
    print(f"created tables: {', '.join(rep.created_tables) or 'none'}")
    print(f"created indexes: {', '.join(rep.created_indexes) or 'none'}")
    for table, cols in rep.missing_columns.items():
        print(f"WARNING {table} lacks columns {', '.join(cols)} (not added; indexes skipped)")


if __name__ == "__main__":
    main()
