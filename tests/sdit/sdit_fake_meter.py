"""``sdit`` whose power meter is the deterministic fake of ``tests/sdit/fake_meter.py`` (tests only).

torchrun runs this file in place of the ``sdit`` program when a test needs every process to measure with a
known meter: ``torchrun --standalone --nproc_per_node 2 tests/sdit/sdit_fake_meter.py evaluate ... --measure``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import profiling.meters  # noqa: E402
from cli.main import main  # noqa: E402
from tests.sdit.fake_meter import fake_make_meter  # noqa: E402

profiling.meters.make_meter = fake_make_meter

if __name__ == "__main__":
    main()
