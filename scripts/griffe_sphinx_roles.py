"""A griffe extension for the docs site (mkdocs.yml): docstrings here cross-reference in Sphinx's
style (``:func:`run_study```, ``:mod:`~medtransfer.study.lockstep```), which Markdown would show
as a stray ``:func:`` before the name. Each such role becomes plain inline code, with Sphinx's
``~`` (show only the last part) and ``.`` (relative name) prefixes applied as Sphinx shows them."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):`([^`]+)`")


def _shown(target: str) -> str:
    """The text Sphinx shows for a role's target."""
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target.lstrip(".")


class SphinxRoles(Extension):
    """Rewrite Sphinx cross-reference roles in every docstring as inline code."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: f"`{_shown(m[1])}`", obj.docstring.value)
