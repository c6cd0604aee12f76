"""Account search by id, name, email and phone: substring matches served by an index.

SQLite: the FTS5 table ``account_search`` (trigram tokenizer, external content = the
``account`` table, kept in step by triggers on insert, update and delete; migration 0009).
PostgreSQL: ``pg_trgm`` GIN indexes on the same four columns, used by ``ILIKE``. Both
answer the same :class:`~dispatcher.domain.search.SearchTerms` with the same rows; what a
person typed is only ever a bound parameter, quoted as an FTS5 string or a LIKE pattern
with its wildcards escaped, never SQL or query syntax.

A later migration that rebuilds ``account`` on SQLite (Alembic's batch mode copies the
table) drops its triggers and renumbers rowids: it must recreate both and run the FTS5
``rebuild`` command, as 0009 does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    TextClause,
    and_,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.engine import Connection, RowMapping

from dispatcher.domain.search import SearchTerms, fts_phrase, like_pattern
from dispatcher.store.sql import ACCOUNT

SEARCH_TABLE = "account_search"  # made by migration 0009 (schema.NOT_MODELLED)
_TEXT = "{account_id full_name email}"
_PG_TEXT = "(account.account_id || ' ' || account.full_name || ' ' || coalesce(account.email, ''))"


class AccountSearch:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, terms: SearchTerms, limit: int) -> list[RowMapping]:
        """Up to ``limit`` accounts: the one whose id is exactly the query first, then
        those matching every word (id, name or email) or any phone digits. In no order
        beyond that: the page says when there may be more, and a longer query narrows."""
        if terms.empty:
            return []
        with self.engine.connect() as conn:
            found = list(
                conn.execute(select(ACCOUNT).where(ACCOUNT.c.account_id == terms.text)).mappings()
            )
            if not terms.searchable:
                return found
            if conn.dialect.name == "sqlite":
                matched = self._sqlite(conn, terms, limit)
            else:
                matched = self._postgresql(conn, terms, limit)
        seen = {row["account_id"] for row in found}
        return (found + [row for row in matched if row["account_id"] not in seen])[:limit]

    @staticmethod
    def _sqlite(conn: Connection, terms: SearchTerms, limit: int) -> list[RowMapping]:
        parts = []
        if terms.words:
            parts.append(" AND ".join(f"{_TEXT} : {fts_phrase(w)}" for w in terms.words))
        if terms.phone_digits:
            parts.append(" OR ".join(f"phone : {fts_phrase(d)}" for d in terms.phone_digits))
        match = " OR ".join(f"({part})" for part in parts)
        hits: Select[tuple[Any]] = (
            select(literal_column("rowid"))
            .select_from(table(SEARCH_TABLE))
            .where(text(f"{SEARCH_TABLE} MATCH :match"))
            .limit(limit)
        )
        query = select(ACCOUNT).where(literal_column("account.rowid").in_(hits))
        return list(conn.execute(query, {"match": match}).mappings())

    @staticmethod
    def _postgresql(conn: Connection, terms: SearchTerms, limit: int) -> list[RowMapping]:
        # The very expression of the index ix_account_trgm_text, so the planner uses it.
        conditions: list[ColumnElement[bool] | TextClause] = []
        params: dict[str, str] = {}
        if terms.words:
            for i, word in enumerate(terms.words):
                params[f"w{i}"] = like_pattern(word)
            conditions.append(
                and_(*(text(f"{_PG_TEXT} ILIKE :w{i}") for i in range(len(terms.words))))
            )
        for i, digits in enumerate(terms.phone_digits):
            params[f"p{i}"] = like_pattern(digits)
            conditions.append(text(f"account.phone LIKE :p{i}"))
        query = select(ACCOUNT).where(or_(*conditions)).limit(limit)
        return list(conn.execute(query, params).mappings())
