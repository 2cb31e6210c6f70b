"""Roles in a workspace, and what each may do. Pure.

viewer: read everything in the workspace. editor: also create and change universes, runs, launches and
bindings. admin: also accounts and credentials, members, API tokens and workspace settings. A role
includes every lower one. An object of another workspace does not exist for the caller (404, not 403).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


def weaker(a: Role, b: Role) -> Role:
    """The lesser of two roles: a token never acts above its user's role in the workspace."""
    return a if a.rank <= b.rank else b
