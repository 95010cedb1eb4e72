"""Build of crossent's optional compiled CPU kernel (all other metadata lives in pyproject.toml).

The kernel (csrc/ce_cpu.cpp) is a plain C ABI shared library that crossent opens with ctypes; it is
built as the extension ``crossent._native._ckernels`` only so that setuptools compiles, names and
installs it like any extension (regular and editable installs alike). It is ``optional``: without a
C++ compiler with OpenMP the install still succeeds, and crossent falls back to its pure NumPy/PyTorch
path with one warning at first use.

Flags: -O3 and OpenMP; no -march: the kernel carries AVX-512 and AVX2 variants of its hot loops
(GCC target attributes) and picks one at run time, so a wheel built here runs on any x86-64 CPU.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_UNIX_FLAGS = [
    "-O3",
    "-std=c++17",
    "-fopenmp",
    "-ffp-contract=off",  # results must not depend on how a loop was split (FMAs are explicit)
    "-fno-math-errno",
    "-fvisibility=hidden",
    "-Wno-psabi",
]


class BuildExt(build_ext):
    """Pick compiler flags by compiler family; report a failed optional build in one line."""

    def build_extensions(self) -> None:
        for ext in self.extensions:
            if self.compiler.compiler_type == "msvc":
                ext.extra_compile_args = ["/O2", "/openmp", "/std:c++17"]
                ext.extra_link_args = []
            else:
                ext.extra_compile_args = list(_UNIX_FLAGS)
                ext.extra_link_args = ["-fopenmp"]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "crossent._native._ckernels",
            sources=["csrc/ce_cpu.cpp"],
            depends=["csrc/ce_kernels.inc", "csrc/ce_tiles.inc", "csrc/binary_kernels.inc"],
            language="c++",
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
