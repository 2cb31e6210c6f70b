"""What a capability is: the one description that feeds validation, the settings schema for the editor and
the executor (seed-spec §3.7 REBUILD: the original's catalog, editor and engine disagreed on ids, so no
binding could ever succeed).

A capability turns rendered settings into one or more provider requests (Instagram needs two: create a
container, then publish it), normalises the answers into a node output, and explains failures in words
that say what to do. All of it is pure: authentication headers, base URLs, rate limits and retries are
added by the integrations layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Settings(BaseModel):
    """Base of every capability's settings: unknown keys are errors (a typo is not silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(StrEnum):
    """What a person should do about a failed call."""

    RECONNECT = "reconnect"  # the credential is invalid, expired or lacks a scope
    FIX_SETTING = "fix_setting"  # the request was refused because of what we sent
    WAIT = "wait"  # rate limited or the provider is down: retried, or try again later
    CONTACT_PROVIDER = "contact_provider"  # the account is blocked or lacks a plan/permission


@dataclass(frozen=True, slots=True)
class Failure:
    code: str  # stable, e.g. "openai.invalid_request_error", "slack.channel_not_found"
    message: str  # one sentence for a person, no secrets
    action: Action
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """A request relative to the account's base URL, without authentication."""

    method: str
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # The provider drops a resent request with the same key in this header (None: not supported).
    idempotency_header: str | None = None
    # Instagram's Graph API takes the token as a form field, not a header.
    token_in_body: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One request of a capability. `build` sees the settings and the outputs of earlier steps."""

    name: str
    build: Callable[[Any, Mapping[str, Any]], ProviderRequest]
    # (status, body) -> this step's output; called only for answers `failure` accepted.
    normalize: Callable[[int, Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Capability:
    id: str  # "<provider>.<name>", e.g. "openai.chat"
    provider: str
    label: str
    description: str
    settings: type[Settings]
    steps: tuple[Step, ...]
    # Scopes an OAuth account must hold; checked before any call.
    scopes: tuple[str, ...] = ()
    writes: bool = True  # has an effect outside (posting, publishing); reads are safe to repeat

    def settings_schema(self) -> dict[str, Any]:
        """JSON Schema of the settings, for the editor and the API."""
        return self.settings.model_json_schema()

    def parse_settings(self, raw: Mapping[str, Any]) -> Settings:
        """Rendered settings as the capability's model; SettingsError says which field and why."""
        try:
            return self.settings.model_validate(dict(raw))
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in err['loc']) or '(settings)'}: {err['msg']}"
                for err in exc.errors()
            ]
            raise SettingsError(self.id, problems) from None


class SettingsError(ValueError):
    def __init__(self, capability: str, problems: list[str]) -> None:
        self.capability = capability
        self.problems = problems
        super().__init__(f"settings of {capability}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class OAuthEndpoints:
    authorize_url: str
    token_url: str
    revoke_url: str | None = None


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    category: str
    base_url: str
    auth_kinds: tuple[str, ...]  # of accounts.auth_kind: "oauth2", "api_key", "basic", "none"
    # How a token or key is sent: "bearer", "x-api-key" (Anthropic), or "query:<name>".
    auth_header: str
    failure: Callable[[int, Any], Failure | None]  # None: the answer is a success
    oauth: OAuthEndpoints | None = None
    # Headers every request carries (API versions pinned here, one place to move them).
    headers: Mapping[str, str] = field(default_factory=dict)
    # A cheap read that proves a credential works (checked when an API-key account is saved).
    probe: ProviderRequest | None = None


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A catalog entry of the original studio that has no implementation here yet: listed, never faked."""

    id: str
    name: str
    category: str
    capabilities: tuple[str, ...]


class UnknownCapability(LookupError):
    pass


@dataclass(frozen=True)
class Registry:
    providers: Mapping[str, Provider]
    capabilities: Mapping[str, Capability]
    not_yet: tuple[Unsupported, ...] = ()

    def capability(self, capability_id: str) -> Capability:
        found = self.capabilities.get(capability_id)
        if found is None:
            pending = next((u for u in self.not_yet if capability_id.split(".")[0] == u.id), None)
            if pending is not None:
                raise UnknownCapability(
                    f"{pending.name} ({pending.id}) is in the catalog but not yet executable; "
                    f"executable capabilities: {', '.join(sorted(self.capabilities))}"
                )
            raise UnknownCapability(
                f"no capability {capability_id!r}; executable ones: {', '.join(sorted(self.capabilities))}"
            )
        return found

    def provider_of(self, capability: Capability) -> Provider:
        return self.providers[capability.provider]

    def catalog(self) -> list[dict[str, Any]]:
        """Every provider with its capabilities and their settings schema, then the ones not yet
        executable (so a person sees what exists and what does not, instead of a fake)."""
        entries: list[dict[str, Any]] = []
        for provider in self.providers.values():
            entries.append(
                {
                    "id": provider.id,
                    "name": provider.name,
                    "category": provider.category,
                    "auth_kinds": list(provider.auth_kinds),
                    "executable": True,
                    "capabilities": [
                        {
                            "id": c.id,
                            "label": c.label,
                            "description": c.description,
                            "scopes": list(c.scopes),
                            "writes": c.writes,
                            "settings_schema": c.settings_schema(),
                        }
                        for c in self.capabilities.values()
                        if c.provider == provider.id
                    ],
                }
            )
        for pending in self.not_yet:
            entries.append(
                {
                    "id": pending.id,
                    "name": pending.name,
                    "category": pending.category,
                    "executable": False,
                    "capabilities": [{"id": c, "executable": False} for c in pending.capabilities],
                }
            )
        return entries


def dig(value: Any, *path: str | int) -> Any:
    """value[path[0]][path[1]]... or None when any step is missing (provider answers vary)."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
        elif not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value
