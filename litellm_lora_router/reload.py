"""Config hot reload: a changed router config replaces the running router without a restart.

The config file's folder is watched, not the file: a Kubernetes ConfigMap volume updates by swapping
a `..data` symlink, so the file itself never changes in place. Changes are debounced; the new
config is validated and the whole new router (classifiers, models, MCP sessions, adapter probes)
is built off the request path, then swapped in with one reference assignment. Requests already
being routed finish on the old router, which is closed once they are done. A file that fails
validation changes nothing: the errors are logged as `lora-router check` prints them, and the
failure is counted. SIGHUP forces a reload (also of models whose files changed under the same
config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from .config import RouterConfig, load_config
from .errors import LoraRouterError
from .router import LoraRouter

__all__ = ["ConfigReloader", "ReloadListener", "RouterHolder"]

logger = logging.getLogger("litellm_lora_router")

#: The longest an old router waits for its requests before it is closed anyway.
DRAIN_TIMEOUT_S = 30.0


class RouterHolder(Protocol):
    """Whatever serves requests with `router` (the LiteLLM hook); reload assigns it."""

    router: LoraRouter


class ReloadListener(Protocol):
    def reload(self, ok: bool) -> None: ...

    def config_loaded(self, fingerprint: str) -> None: ...


class ConfigReloader:
    """Watches one router config; swaps `holder.router` for a router built from each valid change."""

    def __init__(self, path: str | Path, holder: RouterHolder, build: Callable[[RouterConfig], LoraRouter],
                 listener: ReloadListener | None = None, debounce_s: float = 0.5) -> None:
        self.path = Path(path).absolute()  # not resolved: the symlink a ConfigMap swaps must stay in the path
        self._holder = holder
        self._build = build
        self._listener = listener
        self._debounce_ms = max(1, int(debounce_s * 1000))
        self._lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._sighup = False

    async def reload(self, force: bool = False) -> bool | None:
        """True when a new router serves, False when the config was refused (the old one serves
        on), None when nothing changed (unless `force`)."""
        async with self._lock:
            current = self._holder.router
            try:
                config = await asyncio.to_thread(load_config, self.path)
            except LoraRouterError as exc:
                return self._refused(current, exc)
            if not force and config.fingerprint() == current.config.fingerprint():
                return None  # model files changed under an unchanged config: SIGHUP (force) reloads them
            try:
                router = await asyncio.to_thread(self._build, config)
            except (LoraRouterError, OSError, ValueError) as exc:
                return self._refused(current, exc)
            try:
                await router.start()
            except BaseException:
                await router.aclose()
                raise
            self._holder.router = router
            self._spawn(current.aclose_when_idle(DRAIN_TIMEOUT_S))
            logger.warning("%s: reloaded (config %s, was %s)", self.path, router.fingerprint[:16],
                           current.fingerprint[:16])
            if self._listener is not None:
                self._listener.config_loaded(router.fingerprint)
                self._listener.reload(True)
            return True

    def _refused(self, current: LoraRouter, exc: BaseException) -> bool:
        logger.error("config reload refused; still routing with config %s:\n%s", current.fingerprint[:16], exc)
        if self._listener is not None:
            self._listener.reload(False)
        return False

    def start(self, watch: bool = True) -> None:
        """Watch the folder (when `watch`) and reload on SIGHUP; needs a running event loop."""
        self._stop = asyncio.Event()
        if watch:
            self._spawn(self._watch(self._stop))
        self._install_sighup()

    async def _watch(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        try:
            async for _ in awatch(self.path.parent, debounce=self._debounce_ms, stop_event=stop, recursive=False,
                                  watch_filter=None):
                await self._reload_logged()
        except OSError as exc:  # e.g. out of inotify watches: SIGHUP still reloads
            logger.warning("%s: cannot watch for changes (%s); send SIGHUP to reload", self.path.parent, exc)

    async def _reload_logged(self, force: bool = False) -> None:
        try:
            await self.reload(force)
        except Exception:  # the watcher's boundary: one broken reload must not end watching
            logger.exception("config reload failed")
            if self._listener is not None:
                self._listener.reload(False)

    def _install_sighup(self) -> None:
        """Only in the main thread, and only where nobody else handles SIGHUP (its default ends
        the process; gunicorn's master uses it to restart workers, which reloads anyway)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGHUP) != signal.SIG_DFL:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_logged(force=True)))
        self._sighup = True

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop watching; wait for a drain in progress (old routers are closed, not leaked)."""
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._stop is not None:
            self._stop.set()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
