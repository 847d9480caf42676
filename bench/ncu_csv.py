# Reading an Nsight Compute source page (ncu -i REP --page source --csv --print-source sass), shared
# by ncu_summary.py and ncu_top.py.
import csv


def source_page(path):
    """The page's column names and its data rows (the rows after the header, which holds 'Source')."""
    rows = list(csv.reader(open(path, newline='', errors='replace')))
    hi = next(i for i, r in enumerate(rows) if any('Source' == c.strip() for c in r))
    return [c.strip() for c in rows[hi]], rows[hi + 1:]


def column(header, pred):
    """The index of the first column whose name satisfies pred, or None."""
    return next((i for i, c in enumerate(header) if pred(c)), None)


def number(text):
    """A cell as a float (thousands separators dropped; 0 where empty or not a number)."""
    try:
        return float(text.replace(',', ''))
    except ValueError:
        return 0.0
