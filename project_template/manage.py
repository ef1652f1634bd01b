#!/usr/bin/env python
"""The original BenchKit project commands, kept working on top of ``benchkit``.

    python manage.py migrate-data [NAME ...] [--zip] [--tdl] [--up]
    python manage.py migrate-code [VERSION]

``--zip`` chunks, ``--tdl`` test-streams, ``--up`` uploads; with none of them all three run.
Datasets come from ``Datasets/ProjectDatasets.py`` (its ``main()``), code from ``TrainScript.py``.
"""

from __future__ import annotations

import os
import sys

from benchkit.cli.main import main

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = {"--zip": "--chunk", "--tdl": "--test", "--up": "--upload"}


def translate(argv: list[str]) -> list[str]:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command == "migrate-data":
        return ["migrate", "data", os.path.join(HERE, "Datasets", "ProjectDatasets.py")] + [
            FLAGS.get(a, a) for a in rest
        ]
    if command == "migrate-code":
        args = ["migrate", "code", os.path.join(HERE, "TrainScript.py")]
        if rest and rest[0].isdigit():
            args += ["--version", rest[0]]
            rest = rest[1:]
        return args + rest
    print(f"unknown command {command!r}; use migrate-data or migrate-code", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    os.chdir(HERE)
    sys.exit(main(translate(sys.argv[1:])))
