"""API-10: the password policy (identity/passwords.py), and over real HTTP at the owner's setup.

7 characters rejected, 8 accepted, 64 and 128 accepted and 129 rejected; no composition rules
(all-lowercase is fine); every password of the shipped common list (the zxcvbn top 10,000 that are 8+
characters) rejected, in any case; trailing spaces are kept, not trimmed; a 128-character password is
not truncated: a login with its first 72 bytes (bcrypt's limit) or with the trailing space dropped fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import login, setup_links
from tests.integration.conftest import serving

from cosmogen.identity.passwords import PasswordRejected, check_policy, common_passwords


@pytest.mark.parametrize("length", [8, 9, 64, 128])
def test_lengths_8_to_128_are_accepted(length: int) -> None:
    check_policy(("correcthorse" * 11)[:length])


@pytest.mark.parametrize("length", [0, 1, 7, 129, 1000])
def test_other_lengths_are_rejected(length: int) -> None:
    with pytest.raises(PasswordRejected, match=r"too (short|long)"):
        check_policy(("correcthorse" * 100)[:length])


def test_no_composition_rules_and_spaces_count() -> None:
    for password in (
        "alllowercaseletters",
        "ALLUPPERCASE",
        "with spaces inside",
        "ünïcödé pässwörd",
        "  padded  ",
    ):
        check_policy(password)
    check_policy("sevenx7 ")  # 7 characters plus a space is 8: the space counts


def test_every_common_password_is_rejected() -> None:
    listed = common_passwords()
    assert len(listed) >= 3000 and {"password", "12345678", "iloveyou", "password1"} <= listed
    for password in listed:
        with pytest.raises(PasswordRejected):
            check_policy(password)
        with pytest.raises(PasswordRejected):
            check_policy(password.upper())


def test_over_http_at_setup_no_truncation(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    long = ("a quite long passphrase, " * 6)[:127] + " "
    assert len(long) == 128 and long.endswith(" ")
    with serving(tmp_path) as (url, _):
        token = setup_links(log)[-1]

        def setup(password: str) -> tuple[int, dict[str, str], object]:
            body = {"token": token, "email": "o@example.com", "display_name": "O", "password": password}
            return call(url + "/api/v1/setup", "POST", body=body)

        for bad, why in (("x" * 7, "too short"), ("x" * 129, "too long"), ("football", "common")):
            status, _, body = setup(bad)
            assert status == 422 and why in body["detail"], body  # type: ignore[index]
            assert bad not in str(body)
        assert setup(long)[0] == 201
        login(url, "o@example.com", long)
        for wrong in (long[:72], long.rstrip(), long[:-1] + "x"):
            status, _, body = call(
                url + "/api/v1/session", "POST", body={"email": "o@example.com", "password": wrong}
            )
            assert status == 401, body
