"""one supply model: partial fills of an authorized fill, the day a fill left apart from the day the patient has it,
run-out as the last day covered, the supply each prescription caches; batches planned before compounding

Revision ID: 0007
Revises: 0006

Until 0006 every order counted as one fill (a BUD-capped 14-day fill of a 60-day prescription used a refill),
`orders.dispensed_on` held the day the supply started (the parcel's arrival for shipped fills) and run-out was
the first day without medicine, per fill. From here (pharmacy/supply/rules.py):

* `orders.authorized_fill` — which authorized fill an order draws from; partial fills share it;
* `orders.supply_starts_on` — the day the patient has it; `orders.dispensed_on` becomes the day it left the
  pharmacy (the local date of `dispensed_at`);
* `orders.run_out_date` — the last day covered once that fill joined the supply (early fills stack);
* `prescriptions.days_dispensed`, `latest_days_supply` (and the existing latest fill and run-out) — the cache;
* `orders.batch_planned_at/by` and nullable `order_ingredient_lots.quantity_used` — lots chosen (and the BUD
  cap fixed) before compounding, the measured amount recorded when compounded.

The data step recomputes every cached value from the orders already dispensed, with the same pure model the
app uses, so the numbers of old and new fills add up the same way.
"""
import os
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("orders", sa.Column("authorized_fill", sa.Integer(), server_default="0", nullable=False))
    op.add_column("orders", sa.Column("supply_starts_on", sa.Date(), nullable=True))
    op.add_column("orders", sa.Column("batch_planned_at", sa.DateTime(), nullable=True))
    op.add_column("orders", sa.Column("batch_planned_by_id", sa.Integer(), nullable=True))
    op.add_column("prescriptions", sa.Column("days_dispensed", sa.Integer(), server_default="0", nullable=False))
    op.add_column("prescriptions", sa.Column("latest_days_supply", sa.Integer(), nullable=True))
    # order_ingredient_lots is referenced by no table, so its batch rebuild on SQLite is safe (orders is not
    # rebuilt: screening alerts and payments point at it).
    with op.batch_alter_table("order_ingredient_lots") as batch:
        batch.alter_column("quantity_used_milli", existing_type=sa.BigInteger(), nullable=True)
    # Adherence reads the day each fill reached the patient: the per-patient report index covers it too.
    op.drop_index("ix_orders_report_patient", table_name="orders")
    op.create_index("ix_orders_report_patient", "orders",
                    ["patient_id", "state", "dispensed_on", "days_supply", "prescription_id", "price_cents",
                     "shipping_cents", "supply_starts_on"], unique=False)
    _recompute_supply()


def _local_date(at, tz):
    if at is None:
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(tz).date()


def _as_date(value):
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _recompute_supply():
    """Every prescription's dispensed orders, walked in order through the supply model."""
    from pharmacy.supply import rules  # pure: no app, no session

    tz = ZoneInfo(os.environ.get("PHARMACY_TIMEZONE", "America/Chicago"))
    conn = op.get_bind()
    rxs = conn.execute(sa.text(
        "SELECT id, days_supply, refills_authorized, expiry_date, replaces_id FROM prescriptions ORDER BY id")).all()
    run_outs = {}
    for rx_id, per_fill, refills, expiry, replaces_id in rxs:
        orders = conn.execute(sa.text(
            "SELECT id, fill_number, state, dispensed_on, dispensed_at, days_supply FROM orders "
            "WHERE prescription_id = :rx ORDER BY fill_number"), {"rx": rx_id}).all()
        auth = rules.Authorization(days_per_fill=per_fill, refills=refills, expiry_date=_as_date(expiry))
        current = rules.supply_from_cache(auth, days_dispensed=0, dispensings=0,
                                          run_out=run_outs.get(replaces_id), last_days=None)
        latest = None
        for order_id, fill_number, state, started, dispensed_at, days in orders:
            values = {"id": order_id, "fill": min(current.fills_completed, auth.fills - 1)}
            if state == "dispensed" and started is not None:
                starts_on = _as_date(started)
                left_on = _local_date(dispensed_at, tz) or starts_on
                current = rules.Supply(
                    authorization=auth, days_dispensed=current.days_dispensed + days,
                    dispensings=current.dispensings + 1,
                    run_out=rules.run_out_after(current.run_out, starts_on, days), last_days=days,
                    too_soon_percent=current.too_soon_percent)
                latest = fill_number
                values.update(starts=starts_on, left=min(left_on, starts_on), run_out=current.run_out)
                conn.execute(sa.text(
                    "UPDATE orders SET authorized_fill = :fill, supply_starts_on = :starts, dispensed_on = :left, "
                    "run_out_date = :run_out WHERE id = :id"), values)
            else:
                conn.execute(sa.text("UPDATE orders SET authorized_fill = :fill WHERE id = :id"), values)
        run_outs[rx_id] = current.run_out
        conn.execute(sa.text(
            "UPDATE prescriptions SET days_dispensed = :days, latest_fill_number = :latest, "
            "latest_days_supply = :last_days, latest_run_out_date = :run_out WHERE id = :id"),
            {"id": rx_id, "days": current.days_dispensed, "latest": latest, "last_days": current.last_days,
             "run_out": current.run_out})


def downgrade():
    op.drop_index("ix_orders_report_patient", table_name="orders")
    op.create_index("ix_orders_report_patient", "orders",
                    ["patient_id", "state", "dispensed_on", "days_supply", "prescription_id", "price_cents",
                     "shipping_cents"], unique=False)
    # Back to 0006's meaning: dispensed_on was the day the supply started, run-out the first day without.
    conn = op.get_bind()
    for order_id, starts, run_out in conn.execute(sa.text(
            "SELECT id, supply_starts_on, run_out_date FROM orders WHERE supply_starts_on IS NOT NULL")).all():
        conn.execute(sa.text("UPDATE orders SET dispensed_on = :starts, run_out_date = :run_out WHERE id = :id"),
                     {"id": order_id, "starts": _as_date(starts),
                      "run_out": _as_date(run_out) + timedelta(days=1) if run_out is not None else None})
    conn.execute(sa.text(
        "UPDATE prescriptions SET latest_run_out_date = (SELECT o.run_out_date FROM orders o "
        "WHERE o.prescription_id = prescriptions.id AND o.fill_number = prescriptions.latest_fill_number) "
        "WHERE latest_fill_number IS NOT NULL"))
    with op.batch_alter_table("order_ingredient_lots") as batch:
        batch.alter_column("quantity_used_milli", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("prescriptions", "latest_days_supply")
    op.drop_column("prescriptions", "days_dispensed")
    op.drop_column("orders", "batch_planned_by_id")
    op.drop_column("orders", "batch_planned_at")
    op.drop_column("orders", "supply_starts_on")
    op.drop_column("orders", "authorized_fill")
