"""Suite-wide setup."""
import compileall
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionstart(session):
    # The suite starts a few hundred Python processes (the tools, torchrun and its workers).
    # Where PYTHONDONTWRITEBYTECODE is set (as on CI's image) none of them caches the bytecode
    # it compiles, so each would compile pet/ from source again (about 0.3 s a process here);
    # compiled once now, every process reads the cache (__pycache__/, ignored by git).
    for folder in ("pet", "tools"):
        compileall.compile_dir(os.path.join(ROOT, folder), quiet=1)
