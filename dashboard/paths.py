"""Where the project's non-Python parts live: the repository root's sql/, templates/, static/.

The package is installed editable (``pip install -e .``), so these sit beside it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
