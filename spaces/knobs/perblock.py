"""Per-block values of a knob field: one value for every kept block, or a list with one entry each.

A field such as ``heads.keep`` is an int (every kept block alike), a list with one
entry per kept block (position ``i`` is the ``i``-th block the model keeps, after depth
dropping), or None (unchanged). Lists are stored as tuples so that configs stay
hashable; a list whose entries are all equal is stored as that int, its one meaning.
Fields of names (``precision.mlp``) work alike with a string in place of the int
(:func:`canonical_name`).
"""

from __future__ import annotations

from typing import Any, Callable

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


def canonical_name(where: str, value: Any, accepted: tuple[str, ...]) -> str | tuple[str, ...]:
    """``value`` as one of ``accepted`` or a tuple of them (one per kept block); ConfigError naming ``where`` otherwise.

    A bad list entry is named by its index (``precision.mlp[3]``); an all-equal list
    collapses to its one name.
    """
    choices = ", ".join(accepted)
    if isinstance(value, str):
        if value not in accepted:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected one of {choices}")
        return value
    if isinstance(value, (list, tuple)) and value:
        for i, v in enumerate(value):
            if not isinstance(v, str) or v not in accepted:
                raise ConfigError(f"{where}[{i}]: {v!r} is not allowed; expected one of {choices}")
        return value[0] if len(set(value)) == 1 else tuple(value)
    raise ConfigError(f"{where}: {value!r} is not allowed; expected one of {choices}, or a non-empty list of them "
                      "(one per kept block)")


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def is_list(value: Any) -> bool:
    """True for the per-block (tuple) form."""
    return isinstance(value, tuple)


def expand(value: Any, n: int, default: Any) -> list:
    """One entry per block of ``n`` (``default`` where the value is None)."""
    if value is None:
        return [default] * n
    if isinstance(value, tuple):
        assert len(value) == n, "check_length first"
        return list(value)
    return [value] * n


def check_length(where: str, value: Any, n: int, single: str = "one integer") -> None:
    """A per-block list must have one entry per kept block (``n``); ``single`` names the uniform form."""
    if isinstance(value, tuple) and len(value) != n:
        raise ConfigError(f"{where}: {len(value)} entries are not allowed; the compressed model keeps {n} blocks, "
                          f"so give {n} entries (one per kept block) or {single} for all")


def to_json(value: Any) -> Any:
    """The JSON form (a list for the per-block form)."""
    return list(value) if isinstance(value, tuple) else value


def label(value: Any) -> str:
    """``4`` or ``6,5,4,4`` (``int8,fp32,int8``) for summaries and table columns."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def entries(value: Any) -> tuple:
    """The entries of a per-block list, or the one value as a 1-tuple."""
    return value if isinstance(value, tuple) else (value,)


def map_entries(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` of the one value, or a tuple of ``fn`` of each entry (re-canonicalise it in a config)."""
    return tuple(fn(v) for v in value) if isinstance(value, tuple) else fn(value)


def describe(value: Any, how: Callable[[Any], str | None]) -> str | None:
    """``how(value)``; for a per-block list, ``how`` of each distinct entry and the blocks holding it.

    e.g. ``torchao int8 dynamic in blocks 0, 2; torch bf16 in block 1``; entries whose
    ``how`` is None are left out (None when nothing is left).
    """
    if not isinstance(value, tuple):
        return how(value)
    blocks: dict[Any, list[str]] = {}
    for i, v in enumerate(value):
        blocks.setdefault(v, []).append(str(i))
    texts = [f"{text} in block{'s' * (len(idx) > 1)} {', '.join(idx)}" for v, idx in blocks.items()
             if (text := how(v)) is not None]
    return "; ".join(texts) or None
