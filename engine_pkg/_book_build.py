"""cffi build script for the C order book (out-of-line API mode).

`setup.py` references it as ``cffi_modules=["engine_pkg/_book_build.py:ffibuilder"]`` so that
``pip install -e .`` compiles ``engine_pkg._book`` in place; ``python engine_pkg/_book_build.py``
builds it by hand (used by the fuzz and bench scripts for quick iteration).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"


def _cdef_from_header(text: str) -> str:
    """The header without preprocessor lines, as cffi's cdef wants it."""
    return "\n".join(line for line in text.splitlines() if not re.match(r"\s*#", line))


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header((CSRC / "book.h").read_text()))
# the module's CPython glue (csrc/pyglue.h): Engine.process's list of records read in place,
# the events written straight into the bytes objects it returns
ffibuilder.cdef("int sb_process_pylist(sb_engine *e, uintptr_t records, int64_t now, uintptr_t out);")

_extra = os.environ.get("SUPERNOBA_BOOK_CFLAGS", "").split()
ffibuilder.set_source(
    "engine_pkg._book",
    '#include "book.h"\n#include "pyglue.h"\n',
    sources=[os.path.relpath(CSRC / "book.c")],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=["-O3", "-std=c11", "-fno-strict-aliasing", *_extra],
)

if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        prog="python engine_pkg/_book_build.py",
        description="Compile the C order book (engine_pkg/_book*.so) in place through cffi. "
        "Extra C flags come from SUPERNOBA_BOOK_CFLAGS (e.g. sanitizers for the fuzz build).",
    ).parse_args()
    os.chdir(HERE.parent)
    # the file name `pip install -e .` gives it: a second, version-tagged build next to it would
    # win the import and shadow every later `make setup` build
    ffibuilder.compile(tmpdir=".", verbose=False, target="_book.abi3.so")
