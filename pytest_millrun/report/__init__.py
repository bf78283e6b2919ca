"""The self-contained HTML report: its page, charts, rendered failed notebooks, figure panels."""
