"""Build hook: compiles the C order book through cffi (out-of-line API mode) at install time."""
from setuptools import setup

setup(cffi_modules=["engine_pkg/_book_build.py:ffibuilder"])
