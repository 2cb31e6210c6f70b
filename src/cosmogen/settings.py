"""Settings, parsed once from the environment mapping the entry point was handed (never read elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cosmogen.domain.backup import BackupPolicy, policy_from_env
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.runtime.executor import CRASH_POINTS
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.telemetry.tracing import TracingSettingError, check_endpoint


class SettingsError(ValueError):
    """A setting with a value we cannot use; the message names the variable and what it expects."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str | None
    egress: EgressPolicy
    crash_at: frozenset[str]
    host: str
    port: int
    checkpoint_every: int = 64
    worker_dead_after_s: float = 10.0
    # COSMOGEN_VAULT_KEYS: the vault keyring as JSON; wins over the key file in the data directory.
    vault_keys: Secret | None = None
    # `serve` starts the provider simulator and keeps sandbox accounts on it (runtime/sandbox.py).
    sandbox: bool = False
    # COSMOGEN_OTEL_ENDPOINT: where to export traces over OTLP/HTTP (telemetry/tracing.py); None: none.
    otel_endpoint: str | None = None
    run_quota: int = 200  # COSMOGEN_RUN_QUOTA: unfinished runs per workspace before the API answers 429
    # COSMOGEN_BACKUP_DIR / _EVERY / _KEEP: scheduled backups taken by `serve` (None: off).
    backups: BackupPolicy | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        data_dir: str | None = None,
        database_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        sandbox: bool | None = None,
    ) -> Settings:
        """Command-line options win over the environment, which wins over the defaults."""
        chosen_dir = data_dir or env.get("COSMOGEN_DATA_DIR") or _default_data_dir(env)
        try:
            egress = EgressPolicy.from_env(env)  # the message names the COSMOGEN_EGRESS_* setting
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        # Test-only: named points where the process kills itself, to prove crash recovery.
        crash_at = frozenset(p for p in env.get("COSMOGEN_TEST_CRASH_AT", "").split(",") if p)
        unknown = crash_at - CRASH_POINTS
        if unknown:
            raise SettingsError(
                f"COSMOGEN_TEST_CRASH_AT: unknown points {sorted(unknown)}; known: {sorted(CRASH_POINTS)}"
            )
        every = env.get("COSMOGEN_CHECKPOINT_EVERY", "64")
        if not every.isdigit() or int(every) < 1:
            raise SettingsError(
                f"COSMOGEN_CHECKPOINT_EVERY must be a whole number of nodes, 1 or more, not {every!r}"
            )
        dead_text = env.get("COSMOGEN_WORKER_DEAD_AFTER_S", "10")
        try:
            dead_after = float(dead_text)
        except ValueError:
            dead_after = 0.0
        if not 1.0 <= dead_after <= 600.0:
            raise SettingsError(
                f"COSMOGEN_WORKER_DEAD_AFTER_S must be seconds between 1 and 600, not {dead_text!r}"
            )
        quota_text = env.get("COSMOGEN_RUN_QUOTA", "200")
        if not quota_text.isdigit() or int(quota_text) < 1:
            raise SettingsError(
                f"COSMOGEN_RUN_QUOTA must be a whole number of runs, 1 or more, not {quota_text!r}"
            )
        try:
            backups = policy_from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        try:
            otel_endpoint = check_endpoint(env.get("COSMOGEN_OTEL_ENDPOINT"))
        except TracingSettingError as exc:
            raise SettingsError(str(exc)) from None
        port_text = str(port) if port is not None else env.get("COSMOGEN_PORT", "8420")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingsError(f"COSMOGEN_PORT must be a port number, not {port_text!r}")
        chosen_url = database_url or env.get("COSMOGEN_DATABASE_URL") or None
        sandbox_text = env.get("COSMOGEN_SANDBOX", "").strip().lower()
        if sandbox_text not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SettingsError(f"COSMOGEN_SANDBOX must be 1 or 0, not {sandbox_text!r}")
        if sandbox is None:
            # On by default for the embedded setup (a laptop trying things); off for PostgreSQL, whose
            # workers run elsewhere and could not reach a simulator inside this process.
            sandbox = sandbox_text in ("1", "true", "yes", "on") if sandbox_text else chosen_url is None
        return cls(
            data_dir=Path(chosen_dir).expanduser(),
            database_url=chosen_url,
            egress=egress,
            crash_at=crash_at,
            host=host or env.get("COSMOGEN_HOST", "127.0.0.1"),
            port=int(port_text),
            checkpoint_every=int(every),
            worker_dead_after_s=dead_after,
            vault_keys=Secret(env["COSMOGEN_VAULT_KEYS"]) if env.get("COSMOGEN_VAULT_KEYS") else None,
            sandbox=sandbox,
            otel_endpoint=otel_endpoint,
            run_quota=int(quota_text),
            backups=backups,
        )

    def runtime(self) -> RuntimeSettings:
        return RuntimeSettings(
            data_dir=self.data_dir,
            database_url=self.database_url,
            egress=self.egress,
            crash_at=self.crash_at,
            checkpoint_every=self.checkpoint_every,
            worker_dead_after_s=self.worker_dead_after_s,
            vault_keys=self.vault_keys,
            run_quota=self.run_quota,
            otel_endpoint=self.otel_endpoint,
        )


def _default_data_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "."), ".local", "share")
    return os.path.join(base, "cosmogen")
