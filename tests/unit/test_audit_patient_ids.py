"""Which patients a listed page shows, for its read events (core/audit.patient_ids_in): every kind of line a page
lists — ORM rows, result rows, NamedTuples of columns — in the order they first appear, each once."""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from pharmacy.core.audit import patient_ids_in
from pharmacy.patients.models import Patient


class Line(NamedTuple):
    id: int
    patient_id: int
    prescription_id: int
    days_supply: int


def test_a_line_of_columns_names_its_patient_and_no_other_number_is_taken_for_one() -> None:
    lines = [Line(7, 41, 900, 30), Line(8, 42, 901, 90), Line(9, 41, 902, 30)]
    assert patient_ids_in(lines) == [41, 42]


def test_rows_of_objects_objects_and_patients_in_order_of_first_appearance() -> None:
    order = SimpleNamespace(patient_id=5)
    patient = Patient(id=6, first_name="Ann", last_name="Lee")
    loaded = SimpleNamespace(patient=Patient(id=3, first_name="Bo", last_name="Ray"))  # an already-loaded patient
    assert patient_ids_in([(order, patient)], [loaded, order], [patient], [(1, 2, 3)], None) == [5, 6, 3]
