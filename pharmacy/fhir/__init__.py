"""FHIR R4 under /fhir: patients, prescribers, prescriptions and fills for API clients, and prescriptions in."""
