"""Reproducible evaluation of the gate: a labelled scenario corpus, its metrics and report.

``attestgate eval`` generates the corpus (:mod:`attestgate.evaluation.corpus`),
admits every case in it (:mod:`attestgate.evaluation.runner`), compares the
decisions with the labels and writes a Markdown, PNG and JSON report
(:mod:`attestgate.evaluation.report`). The manifest format both sides share
is in :mod:`attestgate.evaluation.scenario`.
"""
