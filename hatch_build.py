"""Build hook: compile store/_dump.c (the materializer's RESTORE payload writer) into the
CPython extension module ``store._dump``, named with this interpreter's EXT_SUFFIX and
compiled against its headers. A wheel carries it; an editable install imports it from the
source tree, where it is built. Without a C compiler the package still installs; the
materializer then writes every key with HSET (store.redis_dump)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("store") / "_dump.c"
MODULE = Path("store") / ("_dump" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def compile_command(root: Path) -> list[str]:
    """The compiler call building the extension module from its one source file."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    paths = sysconfig.get_paths()
    includes = dict.fromkeys([paths["include"], paths["platinclude"]])  # distinct, in order
    flags = ["-O2", "-shared", *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC")]
    if sys.platform == "darwin":  # Python's symbols resolve when the interpreter loads it
        flags += ["-undefined", "dynamic_lookup"]
    return [*compiler, *flags, *(f"-I{d}" for d in includes), "-o", str(root / MODULE),
            str(root / SOURCE)]  # fmt: skip


class CompileDumpWriter(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        try:
            subprocess.run(compile_command(root), check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            self.app.display_warning(f"skewless: {SOURCE} not compiled, HSET only: {detail}")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it in place
            build_data["force_include"][str(root / MODULE)] = str(MODULE)
