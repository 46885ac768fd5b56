"""The README stays short, its links and docs/ links resolve, and it tells the truth about
the test command CI runs and the sampler default.

Reads files only: no torch, no vitsearch import.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 350

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks and inline code (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor the headings of ``path`` define, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    """The relative link targets (files, folders, anchors) of a Markdown file."""
    return [t for t in _LINK.findall(_prose(path.read_text(encoding="utf-8"))) if not _SCHEME.match(t)]


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file is missing or whose anchor no heading defines."""
    bad = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading with that anchor in {dest.name})")
    return bad


def readme_commands() -> tuple[str, str]:
    """The two fenced commands under "Two commands on a fresh machine": (run, test)."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Two commands on a fresh machine\n(.*?)^## ", text, re.M | re.S)
    assert section, "README.md has no '## Two commands on a fresh machine' section"
    blocks = re.findall(r"^```bash\n(.*?)\n```", section.group(1), re.M | re.S)
    assert len(blocks) == 2, f"expected 2 bash blocks in the section, found {len(blocks)}"
    return blocks[0].strip(), blocks[1].strip()


def steps(command: str) -> list[str]:
    """A one-line shell command split at ';' and '&&' into its steps, whitespace normalised."""
    return [" ".join(s.split()) for s in re.split(r";|&&", command) if s.strip()]


def ci_steps() -> list[str]:
    """The commands of .ci/run, one per non-comment line, split like :func:`steps`."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [s for line in lines if line.strip() and not line.lstrip().startswith("#") for s in steps(line)]


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it under {MAX_README_LINES} and move detail to docs/"


def test_docs_exist_and_readme_links_each():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert DOCS, "docs/ holds no Markdown file"
    assert [d.name for d in DOCS if d.resolve() not in linked] == []


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path):
    assert broken_links(path) == []


def test_link_checker_sees_a_broken_link(tmp_path: Path):
    (tmp_path / "a.md").write_text("# Title\n\n## Some Section, here!\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md#some-section-here) [missing](nope.md) [anchor](a.md#other) "
                   "`[code](gone.md)` [web](https://example.com/x)\n```\n[fenced](gone2.md)\n```\n",
                   encoding="utf-8")
    assert broken_links(doc) == ["nope.md (no such file)", "a.md#other (no heading with that anchor in a.md)"]


def test_readme_test_command_is_what_ci_runs():
    _, test_command = readme_commands()
    wanted = steps(test_command)
    ci = ci_steps()
    missing = [s for s in wanted if s not in ci]
    assert missing == [], f".ci/run must run the README's test command; it lacks: {missing}"
    assert ci.index(wanted[-1]) == len(ci) - 1, ".ci/run must end with the README's pytest step"


def test_readme_commands_name_files_that_exist():
    for command in readme_commands():
        words = shlex.split(command.replace(";", " ; "))
        for flag, value in zip(words, words[1:]):
            if flag == "-c":
                assert (ROOT / value).is_file(), f"README installs with -c {value}, which does not exist"
        assert "pip" in command and "install" in command
    assert (ROOT / "studies" / "default.yaml").is_file()


def test_readme_states_both_sampler_defaults():
    names = {"nsga2": "NSGA-II", "tpe": "TPE", "gp": "GP", "random": "random"}
    source = (ROOT / "search" / "study.py").read_text(encoding="utf-8")
    schema = re.search(r"^\s*sampler:\s*Literal\[[^\]]*\]\s*=\s*\"(\w+)\"", source, re.M)
    assert schema, "search/study.py: no `sampler: Literal[...] = \"...\"` line to read the schema default from"
    study = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text(encoding="utf-8"))
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"gets **{names[schema.group(1)]}** (the schema's default" in text
    assert f"`studies/default.yaml` sets **{names[study['search']['sampler']]}**" in text
