"""Whether this machine can train at all: the `train` extra (PyTorch and NumPy) is installed or not.

Found without importing either, so the agent stays torch-free.
"""

from __future__ import annotations

import importlib.util

TRAINING_PACKAGES = ("torch", "numpy")


def training_unavailable() -> str | None:
    """Why this machine cannot train (a line for the log, `aifarm status` and the dashboard), or None when it can."""
    missing = [name for name in TRAINING_PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"this agent trains nothing: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            "(install the training extra: pip install 'ai-farm[train]')")
