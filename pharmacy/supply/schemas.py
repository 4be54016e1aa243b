"""The supply of a prescription as the JSON API shows it (prescriptions, refill summaries)."""
from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import fields

from pharmacy.core.schemas import BaseSchema
from pharmacy.supply.rules import Supply


class SupplyOutSchema(BaseSchema):
    days_per_fill = fields.Integer(metadata={"description": "Days each authorized fill covers"})
    fills_authorized = fields.Integer(metadata={"description": "The original fill and its refills"})
    fills_completed = fields.Integer(metadata={"description": "Authorized fills whose days are all dispensed"})
    current_fill = fields.Integer(allow_none=True, metadata={
        "description": "The authorized fill the next dispensing draws from (0 = original); null when all are used"})
    days_dispensed_of_current_fill = fields.Integer()
    days_owed = fields.Integer(metadata={"description": "Days the next dispensing may cover (the rest of a partial)"})
    days_remaining = fields.Integer(metadata={"description": "Days the prescription still allows in all"})
    refills_left = fields.Integer()
    run_out_date = fields.Date(allow_none=True, metadata={"description": "Last day covered"})
    days_on_hand = fields.Integer(metadata={
        "description": "Days of medicine held today, today's dose included (not the days of a refill still on its way)"})
    out_since = fields.Date(allow_none=True, metadata={"description": "First day without medicine, if out today"})
    arriving_on = fields.Date(allow_none=True, metadata={
        "description": "The day a dispensed refill still on its way reaches the patient, when its cover starts after a "
                       "gap or after the medicine in hand runs out; null otherwise"})
    days_without_ahead = fields.Integer(metadata={
        "description": "Days without medicine, from today, before that refill arrives (0: none)"})
    earliest_next_start = fields.Date(allow_none=True, metadata={
        "description": "First day the next fill may reach the patient without a too-soon override"})


def supply_dict(current: Supply, day: date) -> dict[str, Any]:
    return {
        "days_per_fill": current.authorization.days_per_fill, "fills_authorized": current.authorization.fills,
        "fills_completed": current.fills_completed, "current_fill": current.current_fill,
        "days_dispensed_of_current_fill": current.days_into_current_fill, "days_owed": current.days_owed,
        "days_remaining": current.days_remaining, "refills_left": current.refills_left,
        "run_out_date": current.run_out, "days_on_hand": current.days_on_hand(day), "out_since": current.out_since(day),
        "arriving_on": current.arriving_on(day), "days_without_ahead": current.gap_ahead(day),
        "earliest_next_start": current.earliest_next_start,
    }
