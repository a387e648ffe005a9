"""Reports rendered from results.json alone: Markdown and a self-contained HTML page."""

from privquant.report.render import render_report

__all__ = ["render_report"]
