"""Every model, imported once so the metadata (and Alembic) sees the whole schema."""
from pharmacy.autorefill.models import Cycle, Enrolment
from pharmacy.billing.models import Fee, Payment, PriceEntry
from pharmacy.compounding.models import Batch, Formula, FormulaIngredient, IngredientLot, Order, OrderIngredientLot
from pharmacy.core.models import ApiToken, AuditEvent, Heartbeat, LinkGuard, LinkUse, StaffSession, User
from pharmacy.documents.models import Document
from pharmacy.eprescribing.models import ErxDeliveryAttempt, ErxIntake, ErxMessage, ErxPrescriberAddress
from pharmacy.formulas.models import FormulaVersion
from pharmacy.inventory.models import InventoryItem, LotStock, StockMove
from pharmacy.ops.models import OpsEvent  # noqa: F401 - the operations log (pharmacy/ops)
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.portal.models import CalendarFeed, PortalSession, SignInChallenge
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.sms.models import ContactPreference, InboundText, SmsConsentEvent

__all__ = [
    "ApiToken", "AuditEvent", "Batch", "CalendarFeed", "ContactPreference", "Cycle", "DeliveryAttempt", "Document",
    "Enrolment", "ErxDeliveryAttempt", "ErxIntake", "ErxMessage", "ErxPrescriberAddress", "Fee", "Formula",
    "FormulaIngredient", "FormulaVersion", "Heartbeat", "InboundText", "IngredientLot", "InventoryItem", "LinkGuard",
    "LinkUse", "LotStock", "Order", "OrderIngredientLot", "OutboxMessage", "Patient", "Payment", "PortalSession",
    "Prescriber", "Prescription", "PriceEntry", "RefillRequest", "RenewalRequest", "ScreeningAlert",
    "SideEffectEntry", "SignInChallenge", "SmsConsentEvent", "StaffSession", "StockMove", "User",
]
