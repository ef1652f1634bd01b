"""Build hooks on top of pyproject.toml: ship ``benchkit-aliases.pth`` at the root of site-packages.

That one-line file installs the ``BenchKit.*`` import aliases (``benchkit/_aliases.py``) when
Python starts, so the original BenchKit's ``from BenchKit.Data.Helpers import get_dataset``
works without a ``BenchKit/`` folder (which would clash with ``benchkit/`` on case-insensitive
filesystems). Wheels get it through ``build_py`` (files at the root of ``build_lib`` land in
site-packages); editable installs (PEP 660) build their wheel without ``build_lib``, so
``editable_wheel`` adds it to the unpacked wheel itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "benchkit-aliases.pth"
HERE = Path(__file__).resolve().parent


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            self.copy_file(str(HERE / PTH), str(Path(self.build_lib) / PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib) / PTH))
        return outputs


class editable_wheel_with_pth(editable_wheel):
    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):  # type: ignore[no-untyped-def]
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copyfile(HERE / PTH, Path(unpacked_wheel) / PTH)
        return result


setup(cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth})
