"""The owner's setup over real HTTP against `cosmogen serve`: a one-time link on stderr at each start
while nobody exists (a new token each time, the old one dead), 256-bit token stored hashed, single use,
then setup is closed (410) and the link is no longer printed."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from sqlalchemy import select

from cosmogen.store import Database
from cosmogen.store.tables import memberships, setup_tokens, users
from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import OWNER, create_owner, setup_links
from tests.integration.conftest import serving


def _setup(url: str, token: str, password: str = OWNER[1]) -> tuple[int, dict[str, str], object]:
    body = {"token": token, "email": OWNER[0], "display_name": "Owner", "password": password}
    return call(url + "/api/v1/setup", "POST", body=body)


def test_first_start_prints_a_one_time_link_that_makes_the_owner(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving(tmp_path) as (url, _):
        first = setup_links(log)
        assert len(first) == 1 and len(first[0]) >= 43  # 256 bits in base64url
        assert call(url + "/api/v1/me")[0] == 401  # no anonymous mode
    with serving(tmp_path) as (url, _):
        links = setup_links(log)
        assert len(links) == 2 and links[0] != links[1]
        status, _, body = _setup(url, links[0])  # the first start's token died with the new one
        assert status == 403 and body["code"] == "setup_token_invalid"  # type: ignore[index]
        assert _setup(url, "x" * 43)[0] == 403
        status, _, body = _setup(url, links[1], "password123")  # a common password
        assert status == 422 and "common" in body["detail"]  # type: ignore[index]
        owner = create_owner(url, log)
        status, _, me = owner.call("/api/v1/me")
        assert (
            status == 200
            and me["role"] == "admin"
            and me["via"] == "session"
            and me["workspace_id"] == "default"
        )
        status, _, body = _setup(url, links[1])  # single use, and closed now
        assert status == 410 and body["code"] == "setup_done"  # type: ignore[index]
    db = Database.open(data_dir=tmp_path / "cosmogen-data")
    try:
        with db.engine.connect() as conn:
            stored = conn.execute(select(setup_tokens.c.token_hash, setup_tokens.c.used_at)).all()
            owner_row = conn.execute(select(users.c.id, users.c.password_hash)).one()
            role = conn.execute(
                select(memberships.c.role).where(memberships.c.user_id == owner_row.id)
            ).scalar()
    finally:
        db.close()
    assert [r.token_hash for r in stored] == [hashlib.sha256(links[1].encode()).hexdigest()]
    assert stored[0].used_at is not None and role == "admin"
    assert owner_row.password_hash.startswith("$argon2id$") and OWNER[1] not in log.read_text()
    with serving(tmp_path) as (url, _):
        assert len(setup_links(log)) == 2  # an owner exists: no new link
        assert _setup(url, links[1])[0] == 410


def test_setup_on_postgresql(tmp_path: Path, clean_pg_url: str) -> None:
    log = tmp_path / "serve.log"
    with serving(tmp_path, "--database-url", clean_pg_url) as (url, _):
        owner = create_owner(url, log)
        assert owner.call("/api/v1/me")[2]["role"] == "admin"
        assert _setup(url, setup_links(log)[-1])[0] == 410


Served = tuple[str, subprocess.Popen[str]]
