"""The command line and the plugin registry load without the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "transformers", "librosa", "scipy", "sklearn", "pytest")


def test_cli_and_registry_import_no_torch_numpy_or_pytest():
    code = (
        "import json, sys\n"
        "import emoplug.cli, emoplug.testing\n"
        "from emoplug.registry import get_registry\n"
        "registry = get_registry()\n"
        "components = registry.all()\n"
        "broken = [p.name for p in registry.plugins.values() if p.error]\n"
        f"print(json.dumps([len(components), broken, [m for m in {HEAVY!r} "
        "if m in sys.modules]]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    count, broken, heavy = json.loads(run.stdout)
    assert count > 20 and not broken  # every bundled component was registered
    assert heavy == []
