#!/usr/bin/env bash
# Regenerates the README's configuration table from engine/config.py (the one settings table) and
# engine/config_docs.py (what each variable means).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
import re
from pathlib import Path
from engine.config_docs import markdown_table
readme = Path("README.md")
text = readme.read_text()
block = "<!-- config-table -->\n" + markdown_table() + "\n<!-- /config-table -->"
readme.write_text(re.sub(r"<!-- config-table -->.*?<!-- /config-table -->", lambda _: block, text, flags=re.S))
PY
