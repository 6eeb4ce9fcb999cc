"""gostgev's test suite.

``ROOT`` is the source tree and ``DATA`` the test vectors and seed corpora
(``tests/data``).  ``scripts/`` is put on ``sys.path`` (at the end) for
``fuzz_targets``, the checkers ``scripts/fuzz.py`` runs and the tests replay.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

_SCRIPTS = str(ROOT / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)
