"""Storage: one schema on SQLite (embedded default) and PostgreSQL (scale-out); see docs/storage.md.

db = Database.open(data_dir=path)          # or Database.open(url="postgresql+psycopg://...")
migrate.upgrade(db)                        # bring the schema to head
with GroupCommitWriter(db) as writer:      # all writes go through one writer per database
    saved = writer.submit(lambda conn: repos.save_version(conn, ...)).result()
"""

from cosmogen.store import migrate, repos, tables
from cosmogen.store.database import Database, DatabaseError
from cosmogen.store.tables import metadata, new_id
from cosmogen.store.writer import CommitOutcomeUnknown, GroupCommitWriter, WriteFunctionError, WriterClosed

__all__ = [
    "CommitOutcomeUnknown",
    "Database",
    "DatabaseError",
    "GroupCommitWriter",
    "WriteFunctionError",
    "WriterClosed",
    "metadata",
    "migrate",
    "new_id",
    "repos",
    "tables",
]
