"""Per-run report: render a decision document (docs/decision-schema.md) as Markdown and self-contained HTML.

Pure: ``render_report(decision, extras)`` returns ``(report_md, report_html)`` from a typed
calibration.schema.Decision; writing files is the caller's job (jobs/).

May import: calibration.schema, common/ and third-party packages (matplotlib); never jobs/ or inference/.
"""

from .render import render_report

__all__ = ["render_report"]
