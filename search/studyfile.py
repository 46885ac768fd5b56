"""Reading a study file's text into a YAML document, with one-line errors.

Stricter than YAML on purpose: a key written twice in one mapping is refused (YAML lets
the last one win silently; in a study file that hides a typo or a stale copy), and so
are empty files, non-UTF-8 bytes and NUL bytes. The schema itself is
:mod:`vitsearch.search.study`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vitsearch.spaces.errors import ConfigError

#: longest path or value echoed in a message (a 5 MB path must not become a 5 MB line)
SHOWN_CHARS = 200


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, its full length said, for messages."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` clipped (:func:`clip`), for messages."""
    return clip(repr(value), limit)


class DuplicateKey(yaml.YAMLError):
    """A mapping writes the same key twice."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"key {key!r} written twice (line {first_line} and line {line}); keep one")
        self.line = line


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges may override on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: the base class says so
                if first != key_node.start_mark.line + 1:
                    raise DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def read_study_document(path: Path) -> Any:
    """The parsed YAML document of the study file ``path``; ConfigError (one line) when it is not one."""
    name = shown(str(path))
    try:
        is_file = path.is_file()
    except OSError as exc:  # a name too long, a loop of links
        raise ConfigError(f"study file {name}: cannot be read ({exc.strerror}); give a YAML study file") from None
    if not is_file:
        raise ConfigError(f"study file {name} does not exist; give a YAML study file such as studies/default.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"study file {name} is not UTF-8 text (byte {exc.start}); give a YAML study file "
                          "such as studies/default.yaml") from None
    if "\x00" in text:
        raise ConfigError(f"study file {name} holds NUL bytes, not YAML text; give a YAML study file")
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as exc:
        raise ConfigError(f"study file {name}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"study file {name}: not valid YAML{where} ({getattr(exc, 'problem', exc)})") from None
    if data is None:  # nothing but blanks and comments: not "the default study" by accident
        raise ConfigError(f"study file {name} is empty; write at least `name: <study name>` "
                          "(every other field has a default), or use `default`")
    return data
