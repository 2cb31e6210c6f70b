"""Per-workspace request rate over real HTTP: `cosmogen serve --workspace-requests-per-minute 60` (a
burst of 10, then one a second): a workspace that goes faster gets 429 with Retry-After, the wait it
names is enough, another workspace and the public health route are not held back."""

from __future__ import annotations

import time
from pathlib import Path

from cosmogen.domain.roles import Role
from cosmogen.identity import users
from cosmogen.store import Database, migrate
from tests.integration.api.helpers import call, member_with_token
from tests.integration.conftest import serving


def test_a_workspace_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    db = Database.open(data_dir=data)
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            users.create_workspace("Other", "other")(conn)
    finally:
        db.close()
    _, busy = member_with_token(data, "busy@example.com", Role.VIEWER)
    _, calm = member_with_token(data, "calm@example.com", Role.VIEWER, workspace="other")
    with serving(tmp_path, "--workspace-requests-per-minute", "60") as (url, _):
        answers = [call(url + "/api/v1/me", token=busy) for _ in range(25)]
        statuses = [a[0] for a in answers]
        assert statuses[:10] == [200] * 10 and statuses.count(429) >= 5, statuses
        _, headers, body = next(a for a in answers if a[0] == 429)
        assert body["code"] == "rate_limited" and headers["retry-after"] == "1"
        assert call(url + "/api/v1/me", token=calm)[0] == 200  # its own bucket
        assert call(url + "/healthz")[0] == 200
        time.sleep(1.0)
        assert call(url + "/api/v1/me", token=busy)[0] == 200
