"""The reference pages stay true to the code: docs/api.md is generated from it
(tools/api_docs.py), and docs/configuration.md covers exactly the settings that exist."""

from __future__ import annotations

import inspect
import re

from tools import api_docs

import costspan


def test_api_reference_is_up_to_date() -> None:
    """The committed page equals what the generator writes from today's signatures and
    docstrings."""
    assert api_docs.PAGE.read_text() == api_docs.render()


def test_api_reference_names_every_public_name_with_its_signature() -> None:
    """Each public name has a section, and each callable's section shows its real signature."""
    page = api_docs.PAGE.read_text()
    sections = set(re.findall(r"^### `(\w+)`", page, re.MULTILINE))
    assert sections == set(costspan.__all__) - {"__version__"}
    for name in ("budget", "report", "instrument"):
        signature = str(inspect.signature(getattr(costspan, name))).replace("'", "")
        assert f"{name}{signature}" in page


def test_configuration_reference_has_every_setting() -> None:
    """docs/configuration.md has a section for every setting, headed by its environment
    variable and its configure() name, and none for a setting that does not exist."""
    from costspan import _config

    page = (api_docs.ROOT / "docs" / "configuration.md").read_text()
    headed = set(re.findall(r"^## `(\w+)` / `(\w+)`", page, re.MULTILINE))
    assert headed == {(s.env, name) for name, s in _config._SETTINGS.items()}
