"""A prescriber's own page for a renewal request: the email carries a reference and this link, never the patient."""
