"""Markdown tables for the reports people read."""
from __future__ import annotations

import pandas as pd

__all__ = ["markdown_table"]


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table (floats to 4 decimals), without needing ``tabulate``."""
    head = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, *rows])
