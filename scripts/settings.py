#!/usr/bin/env python3
"""Print SETTINGS.md: every metadata setting of every component gostgev has.

    python3 scripts/settings.py > SETTINGS.md

The table is made from the declarations in the code (gostgev/settings.py,
gostgev/config/catalog.py); tests/test_settings.py fails when the committed
SETTINGS.md differs from what this prints.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The working tree's declarations, not an installed copy's.
sys.path.insert(0, str(ROOT))

from gostgev.components import COMPONENTS  # noqa: E402
from gostgev.config.catalog import markdown  # noqa: E402


def main():
    sys.stdout.write(markdown(COMPONENTS))


if __name__ == "__main__":
    main()
