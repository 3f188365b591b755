"""Tests of pet/engine/compile.py's error line for a toolchain that cannot build inductor's code."""
from pet.engine.compile import _error_line


def test_the_compilers_own_error_line_is_the_one_shown():
    error = RuntimeError("C++ compile error\n\nCommand:\ng++ /tmp/x.cpp -shared -fPIC ...\n\nOutput:\n"
                         "/tmp/x.cpp:1:10: fatal error: Python.h: No such file or directory\ncompilation terminated.")
    assert _error_line(error) == "/tmp/x.cpp:1:10: fatal error: Python.h: No such file or directory"
    assert _error_line(ValueError("something else\nmore")) == "ValueError: something else"
