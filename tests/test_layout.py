"""DESIGN.md's layout rule: pure logic imports neither Flask nor the database."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "dashboard.config",
    "dashboard.events",
    "dashboard.rules",
    "dashboard.replay",
    "dashboard.diff",
    "dashboard.jsonpointer",
    "dashboard.filters",
    "dashboard.masking",
    "dashboard.permissions",
    "dashboard.spool",
    "dashboard.periods",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_loads_without_flask_or_database(module):
    probe = (
        f"import sys, {module}; "
        "loaded = [m for m in ('flask', 'sqlalchemy', 'psycopg') if m in sys.modules]; "
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"
