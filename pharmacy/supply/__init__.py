"""Supply: one model of what each prescription authorizes and what each patient holds (rules.py), the facts
several features read (reads.py), and the one writer of the supply the prescription caches (services.py)."""
