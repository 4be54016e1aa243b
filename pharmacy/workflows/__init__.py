"""Use cases that span features: the layer above the feature services.

A feature's services touch its own tables and call core, the rules and the shared reads (supply/reads.py).
When one step means work in several features — approving a refill makes an order; dispensing moves the
supply, re-plans reminders and sends a notice; stopping a prescription closes its requests, orders and
reminders — the use case lives here, and views, the API and jobs call it. The import-linter contracts in
pyproject.toml keep the arrows pointing one way (docs/architecture.md).
"""
