"""Per-block values of a knob field: one int for every kept block, or a list with one entry each.

A field such as ``heads.keep`` is an int (every kept block alike), a list with one
entry per kept block (position ``i`` is the ``i``-th block the model keeps, after depth
dropping), or None (unchanged). Lists are stored as tuples so that configs stay
hashable; a list whose entries are all equal is stored as that int, its one meaning.
"""

from __future__ import annotations

from typing import Any

from vitsearch.spaces.errors import ConfigError

def canonical(where: str, value: Any, allow_int: bool = True) -> int | tuple[int, ...] | None:
    """``value`` as None, a positive int, or a tuple of positive ints; ConfigError naming ``where`` otherwise.

    An all-equal list collapses to its int when ``allow_int`` (the field has a uniform form).
    """
    if value is None:
        return None
    if _positive(value) and allow_int:
        return value
    if isinstance(value, (list, tuple)) and value and all(_positive(v) for v in value):
        if allow_int and len(set(value)) == 1:
            return value[0]
        return tuple(value)
    accepted = "a positive integer, a" if allow_int else "a"
    raise ConfigError(f"{where}: {value!r} is not allowed; expected {accepted} non-empty list of positive "
                      "integers (one per kept block) or null (unchanged)")


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def is_list(value: Any) -> bool:
    """True for the per-block (tuple) form."""
    return isinstance(value, tuple)


def expand(value: int | tuple[int, ...] | None, n: int, default: int) -> list[int]:
    """One entry per block of ``n`` (``default`` where the value is None)."""
    if value is None:
        return [default] * n
    if isinstance(value, tuple):
        assert len(value) == n, "check_length first"
        return list(value)
    return [value] * n


def check_length(where: str, value: Any, n: int) -> None:
    """A per-block list must have one entry per kept block (``n``)."""
    if isinstance(value, tuple) and len(value) != n:
        raise ConfigError(f"{where}: {len(value)} entries are not allowed; the compressed model keeps {n} blocks, "
                          f"so give {n} entries (one per kept block) or one integer for all")


def to_json(value: Any) -> Any:
    """The JSON form (a list for the per-block form)."""
    return list(value) if isinstance(value, tuple) else value


def label(value: Any) -> str:
    """``4`` or ``6,5,4,4`` for summaries and table columns."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
