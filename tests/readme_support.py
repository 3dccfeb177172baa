"""Tables of the README that must equal a structure in code."""

from __future__ import annotations

from rehearsal.engine import REPO


def accepted_table(header: str) -> dict[tuple[str, str], str]:
    """A README table of `| name | resource | reason |` rows under `header`, as {(name, resource): reason}."""
    text = (REPO / "README.md").read_text()
    rows = text[text.index(header):].split("\n\n", 1)[0].splitlines()[2:]
    listed = {}
    for row in rows:
        name, resource, reason = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        listed[(name.strip("`"), resource.strip("`"))] = reason
    return listed
