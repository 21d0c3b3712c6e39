"""Detection: rules evaluated as audit events arrive, each raising deduplicated alerts that
name the events they rest on.

Owns the rules (``rules/``), their thresholds (``config``), the evaluator that follows the
audit table by ``seq`` with a persisted cursor (``evaluator``, ``cursor``), how findings
become alert rows (``alerts``), the fleet-wide telemetry sampler (``telemetry``) and the
background task the app starts (``runtime``). The ``alerts`` table itself is audit's
(``fleetward.audit.alerts``). Operators' guide: docs/operations.md, "Alerts".
"""
