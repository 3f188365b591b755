"""Pet: a YACS-configured training solver for PyTorch."""
