"""A network of our own for the SSRF tests: a fresh Linux network and mount namespace per scenario.

Inside it, every unicast address of reliability.md D.1 (10.0.0.1, 169.254.169.254, fd00:ec2::254...) and
two "public" stand-ins (1.2.3.4, 5.6.7.8, 2606:4700::1234) are bound to the loopback interface, canary
listeners accept on 0.0.0.0 and :: (ports 80, 443, 6379, 11211, 21), and /etc/resolv.conf and /etc/hosts
are bind-mounted to point at a stub DNS server on 127.0.0.53. So a request that slipped past the guard
would really connect and be counted, with the production resolver and the real D.1 addresses and ports:
no allowlist is needed to make the canaries reachable, and nothing is loosened for the test. The
namespace has no other interface: no packet leaves it, and the host's network and files are untouched.

Namespaces need root or unprivileged user namespaces (`unshare --map-root-user`); both work on the CI
machines. Without either, `run` fails and says so (it does not skip).

Parent side: `run(name, **args)` starts `python -m tests.ssrf.scenarios <name>` under `unshare` and
returns the JSON the scenario printed. Child side: `enter()` configures the namespace, after checking
that it is not the host's.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.ssrf.vectors import SANDBOX_V4, SANDBOX_V6

REPO = Path(__file__).resolve().parents[2]
_HOST_NETNS = "COSMOGEN_SSRF_HOST_NETNS"


class NoNamespaces(RuntimeError):
    pass


def _netns_id() -> str:
    return str(os.stat("/proc/self/ns/net").st_ino)


@functools.cache
def _prefix() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NoNamespaces("the SSRF tests need util-linux `unshare` to create a network namespace")
    prefix = [unshare, "--net", "--mount"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise NoNamespaces(
            "the SSRF tests need a network namespace: run them as root, or enable unprivileged user "
            f"namespaces (sysctl kernel.unprivileged_userns_clone=1). unshare said: {probe.stderr.strip()}"
        )
    return tuple(prefix)


def run(name: str, timeout_s: float = 240, env: dict[str, str] | None = None, **args: Any) -> dict[str, Any]:
    """Run one scenario of tests/ssrf/scenarios.py in a fresh namespace; its JSON result. `env` adds to
    the child's environment (SSL_CERT_FILE for the TLS scenarios)."""
    env = {**os.environ, **(env or {}), _HOST_NETNS: _netns_id(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*_prefix(), sys.executable, "-m", "tests.ssrf.scenarios", name, json.dumps(args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"scenario {name} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def enter() -> None:
    """Inside the child: refuse to touch the host's network, then set up the sandbox's."""
    host = os.environ.get(_HOST_NETNS)
    if host is None or host == _netns_id():
        raise SystemExit("not in a fresh network namespace: refusing to change this machine's network")
    commands = ["link set lo up"]
    commands += [f"addr add {address}/32 dev lo" for address in SANDBOX_V4]
    commands += [f"addr add {address}/128 dev lo" for address in SANDBOX_V6]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)
    scratch = Path(tempfile.mkdtemp(prefix="ssrf-etc-"))
    (scratch / "resolv.conf").write_text("nameserver 127.0.0.53\noptions timeout:1 attempts:1\n")
    (scratch / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    for name in ("resolv.conf", "hosts"):
        # the mount namespace is private to this process tree: the host's /etc is unchanged
        subprocess.run(["mount", "--bind", str(scratch / name), f"/etc/{name}"], check=True)
