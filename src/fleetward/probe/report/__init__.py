"""The probe's reports: a Rich console view, JSON (schema ``fleetward-probe/1``), JUnit XML
for CI and one self-contained HTML file.

Every format reads :class:`fleetward.probe.model.Report` only, carries the policy version and
the catalog route id of every result (the TARA model takes them as evidence), and passes all
text through :class:`fleetward.probe.report.redact.Scrubber`, so no credential reaches a file.
"""
