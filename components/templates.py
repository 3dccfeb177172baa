"""Renders the config templates in components/files with Jinja2 (strict: a missing value is an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

FILES_DIR = Path(__file__).parent / "files"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(FILES_DIR),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # noqa: S701 (config files and scripts, not HTML)
)


def render(template_name: str, **context: Any) -> str:
    return _environment.get_template(template_name).render(**context)


def read(file_name: str) -> str:
    """A file shipped verbatim (a script, a static config)."""
    return (FILES_DIR / file_name).read_text()
