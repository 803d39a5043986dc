"""The params table: each variant's recorded config (results.json ``config``), side by side.

A config is nested; it is flattened to dotted keys (``train.lr``) and only the keys whose
values differ between variants are shown, with a count of those hidden because every
variant has the same value. A results config may carry ``overrides`` (dotted key -> value,
what was set on the command line): those values are marked wherever they appear, and shown
even when every variant agrees, since a value set by hand is worth seeing. Values are
compared as canonical JSON, so ``1`` and ``true`` (equal in Python) stay different.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OVERRIDES_KEY = "overrides"
OVERRIDE_MARK = "*"
ABSENT = "-"  # the cell of a key a variant's config does not have
MAX_VALUE_CHARS = 60


@dataclass(frozen=True)
class ParamRow:
    """One config key across the columns (variants, or the two sides of a pair)."""

    key: str
    values: dict[str, Any]  # column -> value; a column without the key is absent
    overridden: tuple[str, ...]  # columns whose value was set on the command line
    varies: dict[str, tuple[Any, ...]]  # column -> its jobs' distinct values, if they disagree

    def cell(self, column: str) -> str:
        """The value as the tables show it, marked when it was overridden."""
        if column in self.varies:
            text = " / ".join(format_value(v) for v in self.varies[column]) + " (by seed)"
        elif column in self.values:
            text = format_value(self.values[column])
        else:
            text = ABSENT
        return text + (OVERRIDE_MARK if column in self.overridden else "")


@dataclass(frozen=True)
class ParamsTable:
    columns: tuple[str, ...]
    rows: tuple[ParamRow, ...]  # the keys that differ, and any overridden key
    equal: int  # keys with the same value in every column, not shown
    overridden: bool  # some column's config records overrides

    @property
    def differing(self) -> int:
        return sum(1 for row in self.rows if _differs(row, self.columns))


def format_value(value: Any) -> str:
    """A string as it is, anything else as JSON; long values cut."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def flatten(config: Mapping[str, Any], prefix: str = "", *,
            omit: tuple[str, ...] = (OVERRIDES_KEY,)) -> dict[str, Any]:
    """Nested mappings as dotted keys; lists, scalars and empty mappings are values. The top
    level's ``omit`` keys are left out: by default ``overrides``, a record of how the config
    was made, not a setting."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in omit:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + ".", omit=()))
        else:
            out[dotted] = value
    return out


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``overrides`` (dotted key -> value) when it records any, else {}."""
    found = config.get(OVERRIDES_KEY)
    if not isinstance(found, Mapping):
        return {}
    return {str(key): value for key, value in found.items()}


def overridden_by(key: str, override: str) -> bool:
    """Whether setting ``override`` set ``key``: the same key, a mapping above it, or a longer
    path ending in it (an override named from a root the config does not record, e.g.
    ``study.train.lr`` for ``train.lr``)."""
    return key == override or key.startswith(override + ".") or override.endswith("." + key)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _column(configs: Sequence[Mapping[str, Any]]
            ) -> tuple[dict[str, list[Any]], set[str]]:
    """One column's jobs: key -> the distinct values its jobs record, and the keys set by
    overrides. An override of a key the config does not record becomes a key of its own."""
    values: dict[str, list[Any]] = {}
    marked: set[str] = set()
    for config in configs:
        flat = flatten(config)
        for override, value in overrides(config).items():
            hits = [key for key in flat if overridden_by(key, override)]
            if not hits:
                flat[override] = value
                hits = [override]
            marked.update(hits)
        for key, value in flat.items():
            seen = values.setdefault(key, [])
            if _canonical(value) not in map(_canonical, seen):
                seen.append(value)
    return values, marked


def _differs(row: ParamRow, columns: Sequence[str]) -> bool:
    if row.varies or any(c not in row.values for c in columns):
        return True
    return len({_canonical(row.values[c]) for c in columns}) > 1


def params_table(configs: Mapping[str, Sequence[Mapping[str, Any]]]) -> ParamsTable:
    """column -> the configs of its jobs (one per seed): the keys whose values differ
    between the columns or between a column's seeds, and every overridden key."""
    columns = tuple(name for name, found in configs.items() if found)
    read = {name: _column(configs[name]) for name in columns}
    keys = sorted({key for values, _ in read.values() for key in values})
    rows, equal = [], 0
    for key in keys:
        row = ParamRow(
            key=key,
            values={c: read[c][0][key][0] for c in columns if key in read[c][0]},
            overridden=tuple(c for c in columns if key in read[c][1]),
            varies={c: tuple(read[c][0][key]) for c in columns
                    if len(read[c][0].get(key, ())) > 1},
        )
        if row.overridden or _differs(row, columns):
            rows.append(row)
        else:
            equal += 1
    return ParamsTable(columns=columns, rows=tuple(rows), equal=equal,
                       overridden=any(read[c][1] for c in columns))


def table_cells(table: ParamsTable) -> list[list[str]]:
    """The table's rows as cells: the key, then one value per column."""
    return [[row.key, *(row.cell(c) for c in table.columns)] for row in table.rows]


def summary_sentence(table: ParamsTable, where: str = "every variant") -> str:
    """What the table shows, what it leaves out, and what its marker means."""
    shown = f"{table.differing} differ" + (" (overridden keys shown too)"
                                           if table.overridden else "")
    hidden = (f"{table.equal} key{'s' if table.equal != 1 else ''} the same in {where}, "
              "hidden" if table.equal else f"none the same in {where}")
    text = f"Recorded config (results.json `config`, dotted keys): {shown}; {hidden}."
    if table.overridden:
        text += f" {OVERRIDE_MARK} set on the command line (`config.overrides`)."
    return text


def column_configs(rows: Iterable[tuple[str, Mapping[str, Any]]]
                   ) -> dict[str, list[Mapping[str, Any]]]:
    """(column, config) pairs grouped by column, in first-seen order, empty configs left
    out (a job without results records none)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for column, config in rows:
        out.setdefault(column, [])
        if config:
            out[column].append(config)
    return out
