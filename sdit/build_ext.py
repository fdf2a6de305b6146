"""``python -m sdit.build_ext``: compile the C++ WKV kernel into the environment (``scripts/setup.sh`` runs it).

A module of its own so that ``python -m`` imports :mod:`sdit.models.wkv_ext` once, as itself
(running that module as ``__main__`` would register its torch ops a second time).
"""

import sys

from sdit.models.wkv_ext import main

if __name__ == "__main__":
    sys.exit(main())
