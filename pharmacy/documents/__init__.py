"""Faxed and scanned prescriptions: uploaded or dropped into a watched folder, kept with a checksum, shown page by
page beside the intake form, and attached to the prescription they became."""
