"""Field types of the study schema (:mod:`vitsearch.search.study`): strict numbers, seeds, step counts, paths.

YAML's ``true`` is not 1 here, nor is ``2.0`` a count: pydantic's lax mode would take
both, and a typo would pass as a number. Floats still take ints and numeric strings
(PyYAML reads ``1e-4`` as a string).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict

#: a seed is handed to numpy, torch and Optuna: numpy's RandomState takes 0..2**32-1
MAX_SEED = 2**32 - 1
#: distillation steps of one candidate: beyond this a typo, not a plan (days of CPU per candidate)
MAX_STEPS = 1_000_000
#: a path longer than Linux's PATH_MAX cannot be opened
MAX_PATH = 4096


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


#: YAML's true/false is not 1/0 here, nor is 2.0 an int: a typo must not pass as a number
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_no_bool)]
Bool = Annotated[bool, Strict()]


def _seed(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is 0..{MAX_SEED:,} (2**32 - 1, what numpy takes)")
    return value


def _steps(value: int) -> int:
    if not 0 <= value <= MAX_STEPS:
        raise ValueError(f"distillation steps per candidate are 0..{MAX_STEPS:,} (more is days of work per "
                         "candidate: a typo)")
    return value


Seed = Annotated[int, Strict(), AfterValidator(_seed)]
Steps = Annotated[int, Strict(), AfterValidator(_steps)]


def _path_length(value: str | None) -> str | None:
    if value is not None and (len(value) > MAX_PATH or any(len(part) > 255 for part in value.split("/"))):
        raise ValueError(f"is {len(value):,} characters long; a path has at most {MAX_PATH} characters and at most "
                         "255 between two '/'")
    return value


PathStr = Annotated[str, AfterValidator(_path_length)]
