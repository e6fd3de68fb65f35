"""Check one store file's footer against its group's schema before anyone reads its data.

Every reader of the store (the labeller, training, ``read_offline_features``, migration's
duplicate check, the web app's data audit) calls ``check_file`` first, so a file that another tool wrote, a file cut
short by a crash, or a file whose columns have other types is named with the reason and
never read under a wrong interpretation (nor rewritten).

Rules (DESIGN §3.2):

* the file must open as parquet (footer intact) and hold every column of the group;
* ``timestamp`` and ``collected_at`` must be an Arrow timestamp type with a unit and the
  UTC zone; an integer column is refused, never guessed (seconds? milliseconds?), and a
  zone-less timestamp is refused (local time? UTC?);
* every other column must have the group's type; ``string`` may also be stored as
  ``large_string`` or dictionary-encoded strings;
* only the footer is read: the check costs about a millisecond per file.

A file can be readable without being *exactly* the store's own (another timestamp unit,
extra columns, another string encoding): readers use it, the labeller does not rewrite it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FileCheck", "check_file", "check_schema", "BadStoreFileWarning"]

_UTC_NAMES = {"UTC", "+00:00", "ETC/UTC", "Z"}


class BadStoreFileWarning(UserWarning):
    """Warned by store readers that skip a file they cannot read or interpret (the message names it)."""


@dataclass
class FileCheck:
    """What ``check_file`` found for one file.

    ``problems``: why the file cannot be used (empty when it can); ``differences``: why a
    usable file is not exactly the store's own schema (empty when it is); ``rows``: rows
    its footer declares (0 when unreadable).
    """

    path: Path
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file can be read under the group's schema."""
        return not self.problems

    @property
    def exact(self) -> bool:
        """True when the file's schema is exactly the group's (the only files the labeller rewrites)."""
        return self.ok and not self.differences

    @property
    def reason(self) -> str:
        """One line: the problems, or the differences for a usable file, or "ok"."""
        if self.problems:
            return "; ".join(self.problems)
        return "; ".join(self.differences) if self.differences else "ok"


def _is_utc(tz: str | None) -> bool:
    return tz is not None and tz.upper() in _UTC_NAMES


def _string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _string_like(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _compare(name: str, expected: pa.DataType, got: pa.DataType) -> tuple[str | None, str | None]:
    """(problem, difference) for one column; both None when the types are equal."""
    if expected.equals(got):
        return None, None
    if pa.types.is_timestamp(expected):
        if pa.types.is_integer(got) or pa.types.is_floating(got):
            return (
                f"column {name!r} is {got}, not a timestamp: its unit (s, ms, us, ns) cannot be known, so it is "
                "refused rather than guessed; rewrite it as timestamp[ms, tz=UTC]",
                None,
            )
        if not pa.types.is_timestamp(got):
            return f"column {name!r} is {got}, expected {expected}", None
        if not _is_utc(got.tz):
            zone = "no time zone" if got.tz is None else f"time zone {got.tz!r}"
            return (
                f"column {name!r} is {got} with {zone}: the store holds UTC times only; "
                "rewrite it as timestamp[ms, tz=UTC]",
                None,
            )
        return None, f"column {name!r} is {got} (the store writes {expected})"
    if pa.types.is_string(expected) and _string_like(got):
        return None, f"column {name!r} is {got} (the store writes {expected})"
    return f"column {name!r} is {got}, expected {expected}", None


def check_schema(schema: pa.Schema, expected: pa.Schema) -> tuple[list[str], list[str]]:
    """(problems, differences) of a file schema against a group schema; see the module docstring."""
    problems: list[str] = []
    differences: list[str] = []
    names = schema.names
    present = set(names)
    # counted once: this runs for every file of every read (thousands of files, ~122 columns each)
    dupes: set[str] = set()
    if len(present) != len(names):
        seen: set[str] = set()
        dupes = {n for n in names if n in seen or seen.add(n)}
        problems.append(f"duplicate columns {sorted(dupes)}")
    missing = [n for n in expected.names if n not in present]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        problems.append(f"missing columns ({len(missing)}): {shown}")
    types = dict(zip(names, schema.types))
    for f in expected:
        if f.name not in present or f.name in dupes:
            continue
        problem, difference = _compare(f.name, f.type, types[f.name])
        if problem:
            problems.append(problem)
        if difference:
            differences.append(difference)
    wanted = set(expected.names)
    extra = [n for n in names if n not in wanted]
    if extra:
        differences.append(f"extra columns {extra[:8]}")
    if not problems and not differences and names != expected.names:
        differences.append("columns in another order")
    return problems, differences


def check_file(path: Path, expected: pa.Schema) -> FileCheck:
    """Read ``path``'s footer and check it against ``expected`` (a group schema); never raises for bad files.

    A file whose footer cannot be read (truncated, not parquet, unreadable) gets one
    problem naming the cause; a zero-row file with the right schema is usable (it adds nothing).
    """
    out = FileCheck(Path(path))
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except FileNotFoundError:
        out.problems.append("file disappeared while being read")
        return out
    except (OSError, pa.ArrowException) as exc:
        out.problems.append(f"not a readable parquet file (truncated or corrupt footer: {str(exc).splitlines()[0][:200]})")
        return out
    out.rows = meta.num_rows
    out.problems, out.differences = check_schema(schema, expected)
    return out
