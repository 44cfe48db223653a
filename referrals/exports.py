"""The one CSV writer of every export (the earnings CSV, the admin's "Export selected rows as
CSV"): streamed, and safe to open in a spreadsheet.

A cell a spreadsheet would run as a formula (text starting with `=`, `+`, `-`, `@`, a tab or a
carriage return: "CSV injection") is written with a leading apostrophe, which spreadsheets show
as text and do not evaluate. Numbers stay numbers: an int or Decimal cell, or text that is
exactly a plain decimal number ("-12.34"), is written unchanged, so negative amounts remain
summable figures. A plain number cannot be a formula."""
import csv
from decimal import Decimal

from django.http import StreamingHttpResponse

from ledger.money import PLAIN_DECIMAL

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str | int | Decimal:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, Decimal)):
        return value
    text = str(value)
    if PLAIN_DECIMAL.fullmatch(text):
        return text
    # Spreadsheets skip leading blanks before looking for a formula.
    if text.lstrip(" \n").startswith(FORMULA_STARTS) or text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


class _Echo:
    def write(self, value):
        return value


def csv_lines(rows):
    """Each row (an iterable of cells) as one CSV line, every cell through `safe_cell`."""
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow([safe_cell(cell) for cell in row])


def csv_response(rows, *, filename: str) -> StreamingHttpResponse:
    """A streamed CSV download of `rows` (a generator: huge exports never sit in memory)."""
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
