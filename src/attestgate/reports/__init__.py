"""Reports in and out: SARIF output, the scan report, and importers for other scanners.

- :mod:`attestgate.reports.sarif` writes findings as a SARIF 2.1.0 log.
- :mod:`attestgate.reports.scan_report` builds the JSON report of
  ``attestgate scan``.
- :mod:`attestgate.reports.importers` reads ModelScan JSON, SARIF 2.1.0 and
  Trivy JSON reports into findings.

The submodules are imported on use: the pipeline imports the importers, and
the scan report imports the pipeline's types.
"""
