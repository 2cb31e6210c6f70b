"""SEC-07: password storage. Over real HTTP against `cosmogen serve`: the owner's stored hash is
`$argon2id$` with parameters at or above the ASVS floor (t=3 with m >= 12 MiB, or t=2 with m >= 19 MiB,
or t=1 with m >= 46 MiB); a user whose hash has older, weaker parameters gets it upgraded at the next
successful login (check_needs_rehash), and still signs in afterwards; a failed login upgrades nothing.
Verification is the library's (argon2-cffi, constant time)."""

from __future__ import annotations

import re
from pathlib import Path

from argon2 import PasswordHasher, Type
from sqlalchemy import select
from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import OWNER, create_owner, login
from tests.integration.conftest import serving

from cosmogen.domain.roles import Role
from cosmogen.identity import users
from cosmogen.store import Database
from cosmogen.store.tables import users as user_rows


def params(stored: str) -> tuple[int, int, int]:
    found = re.fullmatch(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[^$]+\$[^$]+", stored)
    assert found is not None, "not an argon2id hash"
    memory, time_cost, lanes = (int(g) for g in found.groups())
    return time_cost, memory, lanes


def at_asvs_floor(time_cost: int, memory_kib: int) -> bool:
    return (
        (time_cost >= 3 and memory_kib >= 12 * 1024)
        or (time_cost >= 2 and memory_kib >= 19 * 1024)
        or (time_cost >= 1 and memory_kib >= 46 * 1024)
    )


def _hash_of(db: Database, email: str) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(select(user_rows.c.password_hash).where(user_rows.c.email == email)).scalar_one()
        )


def test_argon2id_at_the_floor_and_rehash_on_login(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
    with serving(tmp_path) as (url, _):
        create_owner(url, tmp_path / "serve.log")
        db = Database.open(data_dir=data)
        try:
            owner_hash = _hash_of(db, OWNER[0])
            time_cost, memory, _ = params(owner_hash)
            assert at_asvs_floor(time_cost, memory) and (time_cost, memory) == (2, 19 * 1024)
            weak = old.hash("an old but fine passphrase")
            assert not at_asvs_floor(*params(weak)[:2])
            with db.engine.begin() as conn:
                user_id = users.create_user("legacy@example.com", "Legacy", weak)(conn)
                users.add_member("default", user_id, Role.VIEWER)(conn)
            body = {"email": "legacy@example.com", "password": "not it"}
            assert call(url + "/api/v1/session", "POST", body=body)[0] == 401
            assert _hash_of(db, "legacy@example.com") == weak  # a failure changes nothing
            login(url, "legacy@example.com", "an old but fine passphrase")
            upgraded = _hash_of(db, "legacy@example.com")
            assert upgraded != weak and params(upgraded)[:2] == (2, 19 * 1024)
            login(url, "legacy@example.com", "an old but fine passphrase")  # the new hash verifies
            assert _hash_of(db, "legacy@example.com") == upgraded  # and is not rewritten again
        finally:
            db.close()
