"""The capability registry: providers, what each can do, its settings schema, and how answers read."""

from __future__ import annotations

from types import MappingProxyType

from cosmogen.domain.capabilities.catalog import NOT_YET
from cosmogen.domain.capabilities.providers import CAPABILITIES, PROVIDERS
from cosmogen.domain.capabilities.registry import (
    Action,
    Capability,
    Failure,
    Provider,
    ProviderRequest,
    Registry,
    SettingsError,
    UnknownCapability,
)

__all__ = [
    "Action",
    "Capability",
    "Failure",
    "Provider",
    "ProviderRequest",
    "Registry",
    "SettingsError",
    "UnknownCapability",
    "default_registry",
]


def default_registry() -> Registry:
    """The registry v1 ships: built on demand by whoever needs it (no module-level instance)."""
    return Registry(
        providers=MappingProxyType({p.id: p for p in PROVIDERS}),
        capabilities=MappingProxyType({c.id: c for c in CAPABILITIES}),
        not_yet=NOT_YET,
    )
