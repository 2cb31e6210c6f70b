"""SSRF-06: the guard is on with no configuration; an admin allowlist opens exactly what it names; cloud
metadata stays closed even inside an allowlisted range or name, unless a second setting says so.

Settings come from the environment as `cosmogen serve` reads them (Settings.from_env), then drive the
HTTP client and the runtime, in the sandbox network namespace (tests/ssrf/sandbox.py) where 10.1.2.3,
10.1.3.3, 169.254.169.254 and every other D.1 address really answer, and the stub DNS server resolves
api.corp.internal to 10.9.9.9.
"""

from __future__ import annotations

import pytest
from tests.ssrf import sandbox
from tests.ssrf.vectors import all_urls

from cosmogen.integrations.egress import EgressBlocked, EgressPolicy, check_url
from cosmogen.settings import Settings, SettingsError

ADMIN = {"COSMOGEN_EGRESS_ALLOW_NETWORKS": "10.1.2.0/24", "COSMOGEN_EGRESS_ALLOW_HOSTS": "*.corp.internal"}
COVERING = {
    "COSMOGEN_EGRESS_ALLOW_NETWORKS": "169.254.0.0/16,fd00::/8,100.64.0.0/10,192.0.0.0/24,168.63.129.16/32",
    "COSMOGEN_EGRESS_ALLOW_HOSTS": "*.google.internal,metadata-proxy.example",
}
CONFIGS = {
    "fresh": {},
    "admin": ADMIN,
    "metadata_covered": COVERING,
    "metadata_flag": {**COVERING, "COSMOGEN_EGRESS_ALLOW_METADATA": "1"},
}
METADATA_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://192.0.0.192/",
    "http://168.63.129.16/",
    "http://metadata.google.internal/",
    "http://metadata-proxy.example/",  # a name the admin opened, whose DNS answer is 169.254.169.254
]


@pytest.fixture(scope="module")
def outcome() -> dict:
    return sandbox.run("ssrf06", configs=CONFIGS)


def opened(outcome: dict, label: str) -> set[str]:
    return {url for url, row in outcome[label]["targets"].items() if not row["refused"]}


def test_fresh_install_refuses_everything(outcome: dict) -> None:
    assert opened(outcome, "fresh") == set()
    assert all(row["hits"] == [] for row in outcome["fresh"]["targets"].values())
    assert [row["refused"] for row in outcome["fresh"]["node"]] == [True, True]


def test_the_admin_allowlist_opens_exactly_its_range_and_names(outcome: dict) -> None:
    assert opened(outcome, "admin") == {
        "http://10.1.2.3/",
        "http://api.corp.internal/",
        "http://deep.api.corp.internal/",
    }
    rows = outcome["admin"]["targets"]
    assert rows["http://10.1.2.3/"]["hits"] == [["10.1.2.3", 80]]
    assert rows["http://api.corp.internal/"]["hits"] == [["10.9.9.9", 80]]
    for url in all_urls():  # every D.1 vector stays refused, with no connection
        assert rows[url]["refused"] and rows[url]["hits"] == [], url
    for url in ("http://10.1.3.3/", "http://corp.internal/", "http://api.corp.internal.evil.example/"):
        assert rows[url]["refused"] and rows[url]["hits"] == [], url
    node_ok, node_refused = outcome["admin"]["node"]  # the runtime built from the same settings
    assert node_ok["status"] == 200 and node_refused["rule"] == "address"


def test_refusals_say_which_setting_opens_the_target(outcome: dict) -> None:
    rows = outcome["fresh"]["targets"]
    assert "COSMOGEN_EGRESS_ALLOW_NETWORKS" in rows["http://10.1.2.3/"]["message"]
    assert "COSMOGEN_EGRESS_ALLOW_HOSTS" in rows["http://corp.internal/"]["message"]
    resolved = rows["http://api.corp.internal.evil.example/"]["message"]
    assert "COSMOGEN_EGRESS_ALLOW_NETWORKS" in resolved and "COSMOGEN_EGRESS_ALLOW_HOSTS" in resolved
    assert "COSMOGEN_EGRESS_ALLOW_METADATA=1" in rows["http://169.254.169.254/latest/meta-data/"]["message"]


def test_metadata_stays_blocked_inside_allowlisted_ranges_and_names(outcome: dict) -> None:
    rows = outcome["metadata_covered"]["targets"]
    for url in METADATA_TARGETS:
        assert rows[url]["refused"] and rows[url]["rule"] == "metadata", url
        assert rows[url]["hits"] == []
        assert "COSMOGEN_EGRESS_ALLOW_METADATA=1" in rows[url]["message"]
    assert "http://169.254.0.1/" in opened(outcome, "metadata_covered")  # the range itself is open


def test_the_second_setting_opens_metadata_that_is_also_allowlisted(outcome: dict) -> None:
    now_open = opened(outcome, "metadata_flag") - opened(outcome, "metadata_covered")
    assert set(METADATA_TARGETS) <= now_open
    rows = outcome["metadata_flag"]["targets"]
    assert rows["http://169.254.169.254/latest/meta-data/"]["hits"] == [["169.254.169.254", 80]]
    for url in ("http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/"):  # not allowlisted: still closed
        assert rows[url]["refused"] and rows[url]["hits"] == []


def test_the_flag_alone_opens_nothing() -> None:
    policy = Settings.from_env({"COSMOGEN_EGRESS_ALLOW_METADATA": "1"}, data_dir="/nonexistent").egress
    for url in METADATA_TARGETS[:7]:
        with pytest.raises(EgressBlocked) as info:
            check_url(url, policy)
        assert info.value.rule in ("metadata", "host-name")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"COSMOGEN_EGRESS_ALLOW_NETWORKS": "10.1.2.0/33"}, "COSMOGEN_EGRESS_ALLOW_NETWORKS"),
        ({"COSMOGEN_EGRESS_ALLOW_HOSTS": "*.internal"}, "COSMOGEN_EGRESS_ALLOW_HOSTS"),
        ({"COSMOGEN_EGRESS_ALLOW_HOSTS": "*"}, "COSMOGEN_EGRESS_ALLOW_HOSTS"),
        ({"COSMOGEN_EGRESS_ALLOW_HOSTS": "a..b"}, "COSMOGEN_EGRESS_ALLOW_HOSTS"),
        ({"COSMOGEN_EGRESS_ALLOW_HOSTS": "10.0.0.1"}, "COSMOGEN_EGRESS_ALLOW_NETWORKS"),
        ({"COSMOGEN_EGRESS_ALLOW_METADATA": "maybe"}, "COSMOGEN_EGRESS_ALLOW_METADATA"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env, data_dir="/nonexistent")


def test_default_policy_is_the_guard() -> None:
    assert Settings.from_env({}, data_dir="/nonexistent").egress == EgressPolicy()
