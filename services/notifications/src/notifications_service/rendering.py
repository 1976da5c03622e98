"""Email templates: a subject, a plain-text part and an autoescaped HTML part per template.

Each template ``<name>`` is three files in the package's ``templates`` directory:
``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html``. Only ``.html`` files are
autoescaped, so a user's name is markup-safe in the HTML part and verbatim in the text part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class RenderedEmail:
    """The three parts of one email."""

    subject: str
    text: str
    html: str


def single_line(value: str) -> str:
    """Collapse control characters and runs of spaces (header values must be one line)."""
    return " ".join(_CONTROL.sub(" ", value).split())


class EmailRenderer:
    """Renders the package's email templates."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("notifications_service", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )

    def render(self, template: str, context: dict[str, Any]) -> RenderedEmail:
        """Render ``template`` with ``context`` into subject, text and HTML."""
        subject = self._env.get_template(f"{template}.subject.txt").render(context)
        return RenderedEmail(
            subject=single_line(subject),
            text=self._env.get_template(f"{template}.txt").render(context),
            html=self._env.get_template(f"{template}.html").render(context),
        )
