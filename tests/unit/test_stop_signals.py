"""Stop signals on every OS, and the process group backend never NCCL on Windows."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from app.scheduling.decide import choose_backend
from app.stopsignals import install_stop_signals


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
async def test_sigint_and_sigterm_reach_stop_and_handlers_are_restored(platform: str) -> None:
    """Each stop signal sets the stop event on the loop (Windows: a plain handler hands it over); undo restores."""
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM):
        stop = asyncio.Event()
        restore = install_stop_signals(loop, stop.set, platform=platform)
        try:
            os.kill(os.getpid(), sig)
            await asyncio.wait_for(stop.wait(), 5)
        finally:
            restore()
    if platform == "win32":  # asyncio's remove_signal_handler puts back the default handler, not the previous one
        assert signal.getsignal(signal.SIGINT) == before


@pytest.mark.parametrize("gpus, platform, backend", [
    (True, "linux", "nccl"), (True, "darwin", "nccl"), (True, "win32", "gloo"),
    (False, "linux", "gloo"), (False, "win32", "gloo"),
])
def test_nccl_only_where_every_rank_has_a_gpu_and_never_on_windows(gpus: bool, platform: str, backend: str) -> None:
    """NCCL needs a GPU on every rank and is not built for Windows."""
    assert choose_backend(gpus, platform=platform) == backend
