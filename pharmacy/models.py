"""Every model, imported once so the metadata (and Alembic) sees the whole schema."""
from pharmacy.billing.models import Fee, Payment, PriceEntry
from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot, Order, OrderIngredientLot
from pharmacy.core.models import ApiToken, AuditEvent, Heartbeat, LinkAttempt, LinkUse, User
from pharmacy.documents.models import Document
from pharmacy.eprescribing.models import ErxDeliveryAttempt, ErxIntake, ErxMessage, ErxPrescriberAddress
from pharmacy.ops.models import OpsEvent  # noqa: F401 - the operations log (pharmacy/ops)
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage

__all__ = [
    "ApiToken", "AuditEvent", "DeliveryAttempt", "Document", "ErxDeliveryAttempt", "ErxIntake", "ErxMessage",
    "ErxPrescriberAddress", "Fee", "Formula", "FormulaIngredient", "Heartbeat",
    "IngredientLot", "LinkAttempt", "LinkUse", "Order", "OrderIngredientLot", "OutboxMessage", "Patient",
    "Payment", "Prescriber", "Prescription", "PriceEntry", "RefillRequest", "RenewalRequest",
    "ScreeningAlert", "SideEffectEntry", "User",
]
