"""The self-contained HTML report: the page, its charts, rendered failed notebooks, figure panels."""
