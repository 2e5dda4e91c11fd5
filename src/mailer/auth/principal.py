"""The authenticated caller of a request."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.models.enums import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.ADMIN.value in self.scopes
