"""Build hook: compile store/_dump.c (the materializer's RESTORE payload writer) into a
shared library next to it, loaded through ctypes. Without a C compiler the package still
installs; the materializer then writes every key with HSET (store.redis_dump)."""

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
LIBRARY = Path("store") / ("_dump.dll" if sys.platform == "win32" else "_dump.so")


class CompileDumpWriter(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        command = [*compiler, "-O2", "-shared", "-fPIC", "-o", str(root / LIBRARY),
                   str(root / SOURCE)]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            self.app.display_warning(f"skewless: {SOURCE} not compiled, HSET only: {detail}")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it in place
            build_data["force_include"][str(root / LIBRARY)] = str(LIBRARY)
