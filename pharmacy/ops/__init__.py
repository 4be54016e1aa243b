"""Running it for real: health and readiness, Prometheus metrics, `flask doctor`, backups, the operations log."""
