"""Reading a manifest's text: UTF-8 (a BOM, as Excel writes it, is allowed), CSV rows checked
field by field. Each problem is one :class:`emoplug.EmoplugError` line naming the file and
the line, under the recipe key given (``dataset.path`` for a manifest, ``dataset.root`` for a
corpus read from its folder)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from emoplug import EmoplugError

#: the separators a manifest may use, as the warning names them
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
#: the largest field (characters) a manifest cell may hold; csv's default is 131,072
FIELD_LIMIT = 2**31 - 1


def read_utf8(path: Path, key: str = "dataset.path") -> str:
    """The file's text; raises naming the recipe ``key`` and the first line that is not
    UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EmoplugError(f"{key}: {path.name} line {line}: not UTF-8 (byte "
                           f"0x{data[exc.start]:02x}); save the manifest as UTF-8") from None


def sniff_delimiter(text: str) -> str:
    """The separator of a CSV's header line: a comma unless another one of
    :data:`DELIMITER_NAMES` occurs there more often."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in DELIMITER_NAMES}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def csv_rows(text: str, name: str, delimiter: str = ",", key: str = "dataset.path"
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` for every non-blank row of a CSV whose first row names the columns.
    Raises on a repeated column name and on a row with more or fewer fields than the header
    (an unquoted separator inside a value shifts the rest of its row); each error names the
    recipe ``key``, the file and the line."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [column.strip() for column in next(reader, [])]
        repeated = [(c, n) for c, n in Counter(header).items() if n > 1 and c]
        if repeated:
            column, n = repeated[0]
            raise EmoplugError(f"{key}: {name} line 1: duplicate column '{column}' "
                               f"({n} times); name each column once")
        for fields in reader:
            if not any(field.strip() for field in fields) and len(fields) < len(header):
                continue  # a blank (or whitespace-only) line
            if len(fields) != len(header):
                hint = (f" (an unquoted {DELIMITER_NAMES[delimiter]} in a value? quote it)"
                        if len(fields) > len(header) else "")
                raise EmoplugError(f"{key}: {name} line {reader.line_num}: "
                                   f"{len(fields)} fields, the header has {len(header)}{hint}")
            yield reader.line_num, {c: v for c, v in zip(header, fields, strict=True) if c}
    except csv.Error as exc:
        raise EmoplugError(f"{key}: {name} line {reader.line_num}: {exc}") from None
