"""Reports of comparisons: matplotlib figures and the jinja2 HTML page, pure functions of the
summary."""

from optimlab.report.html import render_html, write_report

__all__ = ["render_html", "write_report"]
