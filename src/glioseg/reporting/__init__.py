"""Reporting: training curves, prediction images, tables and the HTML/Markdown report.

See :mod:`glioseg.reporting.report` for where the numbers come from and
:mod:`glioseg.reporting.figures` for the figures (colours, orientation).
"""

from glioseg.reporting.report import build_report

__all__ = ["build_report"]
