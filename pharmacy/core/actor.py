"""Who is acting: passed explicitly to every service so roles are checked where the work is done."""
from __future__ import annotations

from dataclasses import dataclass

from pharmacy.core.roles import Permission, Role, allows


@dataclass(frozen=True)
class Actor:
    kind: str  # "staff", "token", "patient", "system", "anonymous"
    user_id: int | None = None
    role: Role | None = None
    patient_id: int | None = None  # for a patient on a signed link: the only patient they may touch
    prescription_id: int | None = None
    # For an API token: what it may call ("api", "fhir", "ncpdp"; core/auth.TOKEN_SCOPES). None for everyone else.
    scope: str | None = None

    def can(self, permission: Permission) -> bool:
        return self.kind in ("staff", "token") and allows(self.role, permission)

    @property
    def is_staff(self) -> bool:
        return self.kind in ("staff", "token")


SYSTEM = Actor(kind="system")
ANONYMOUS = Actor(kind="anonymous")


def staff(user_id: int, role: Role) -> Actor:
    return Actor(kind="staff", user_id=user_id, role=role)
