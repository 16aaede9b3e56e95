"""The docs stay honest: configuration.md against the schema, every relative link resolves, the
commands shown exist, the Python blocks compile, and the README stays a front door."""

import re
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

from evores.config import defaults

DOCS = ROOT / "docs"
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted(DOCS.glob("*.md"))]
TOP_LEVEL = "Top-level keys"  # the heading of configuration.md's table of keys outside sections
# The one command's subcommands, and the older module spellings that keep working (issue 20).
SUBCOMMANDS = {"run", "report", "export", "plan", "sbatch", "--version"}
OLD_MODULES = {"run", "report", "export", "plan", "slurm"}


def prose(text: str) -> str:
    """The text without its fenced code blocks (a ``# comment`` there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def fenced(kind: str) -> list[tuple[Path, str]]:
    return [
        (path, block)
        for path in DOCUMENTS
        for block in re.findall(rf"^```{kind}\n(.*?)^```", path.read_text(), re.S | re.M)
    ]


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def documented_keys(text: str) -> dict[str, dict]:
    """``{section: {key: default}}`` from the ``| key | ... default ... |`` table under each
    ``## [section]`` heading (``TOP_LEVEL``: keys outside any section, filed under "")."""
    found: dict[str, dict] = {}
    for part in prose(text).split("\n## ")[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"\[(\w+)\]", heading.strip())
        if not match and heading.strip() != TOP_LEVEL:
            continue
        section = found.setdefault(section_name(match), {})
        rows = [cells(line) for line in body.splitlines() if line.startswith("|")]
        header = rows[0]
        key_at, default_at = header.index("key"), header.index("default")
        for row in rows[2:]:  # after the header and its |---| line
            assert len(row) == len(header), f"[{section_name(match)}] row {row} has a wrong width"
            key = row[key_at].strip("`")
            assert key not in section, f"{key} is documented twice"
            section[key] = tomllib.loads(f"value = {row[default_at].strip('`')}")["value"]
    return found


def section_name(match: re.Match | None) -> str:
    return match.group(1) if match else ""


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path.read_text()), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def relative_links() -> list[tuple[Path, str]]:
    return [
        (path, target)
        for path in DOCUMENTS
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...
    ]


def test_configuration_md_documents_every_key_with_its_default_and_no_other():
    schema = defaults()
    expected = {"": {k: v for k, v in schema.items() if not isinstance(v, dict)}}
    expected |= {k: v for k, v in schema.items() if isinstance(v, dict)}
    documented = documented_keys((DOCS / "configuration.md").read_text())
    assert documented.keys() == expected.keys(), "sections differ"
    for section, keys in expected.items():
        shown = documented[section]
        problems = [f"{k} is not documented" for k in keys.keys() - shown.keys()]
        problems += [f"{k} is documented but not in the schema" for k in shown.keys() - keys.keys()]
        problems += [
            f"{k}: documented default {shown[k]!r}, the schema's {keys[k]!r}"
            for k in keys.keys() & shown.keys()
            if shown[k] != keys[k]
        ]
        assert not problems, f"[{section or TOP_LEVEL}]: " + "; ".join(sorted(problems))


def test_every_relative_link_resolves_to_a_file_and_its_heading():
    links = relative_links()
    assert links, "no relative links found: the link pattern is broken"
    broken = []
    for path, target in links:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door_under_20_kb():
    assert README.stat().st_size < 20_000


def test_the_docs_have_at_least_four_pages_and_the_readme_links_each():
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 4
    readme = README.read_text()
    index = (DOCS / "index.md").read_text() if (DOCS / "index.md").exists() else ""
    unlinked = [
        p.name for p in pages
        if p.name != "index.md" and f"(docs/{p.name}" not in readme and f"({p.name}" not in index
    ]  # fmt: skip
    assert not unlinked, f"pages neither the README nor docs/index.md links: {unlinked}"


def test_every_python_block_compiles():
    blocks = fenced("python")
    assert blocks
    for path, block in blocks:
        compile(block, str(path.relative_to(ROOT)), "exec")


def test_every_command_shown_is_one_evores_has():
    unknown = []
    for path, block in fenced("bash"):
        for line in block.splitlines():
            for module in re.findall(r"python3? -m evores\.(\w+)", line):
                if module not in OLD_MODULES:
                    unknown.append(f"{path.name}: python -m evores.{module}")
            for sub in re.findall(r"(?:^|[\s(;&|])evores (\S+)", line):
                if sub not in SUBCOMMANDS:
                    unknown.append(f"{path.name}: evores {sub}")
    assert not unknown, "\n".join(unknown)


def test_the_exit_code_table_matches_evores_core_exits():
    exits = pytest.importorskip("evores.core.exits", reason="evores.core.exits comes with issue 20")
    text = (DOCS / "failures.md").read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = [cells(line) for line in section.splitlines() if re.match(r"\| *\d", line)]
    documented = {int(row[0]): row[1].strip("`") for row in rows}
    for code, name in documented.items():
        value = getattr(exits, name, None)
        assert value == code, f"{name}: documented {code}, evores.core.exits says {value}"
    defined = {
        value for key, value in vars(exits).items()
        if key.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }  # fmt: skip
    assert defined == set(documented), "codes defined but not documented, or the reverse"
