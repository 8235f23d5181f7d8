"""A blocking call given a deadline: run in a helper thread, waited for at most ``timeout`` seconds.

For calls into something that can hang without failing (a frozen libvirtd answers nothing, it does not refuse):
the caller gets an answer in time and the late call finishes, or stays stuck, in the background. At most one call
is in flight: while one is stuck, the next fails at once instead of piling up threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call did not return in time (or an earlier one is still stuck)."""


class _Call(Generic[T]):
    def __init__(self, func: Callable[[], T]) -> None:
        self.func = func
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.result = self.func()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
            self.error = exc
        finally:
            self.done.set()


class Bounded:
    def __init__(self, name: str, timeout: float) -> None:
        self.name, self.timeout = name, timeout
        self._lock = threading.Lock()
        self._pending: _Call[object] | None = None

    def __call__(self, func: Callable[[], T]) -> T:
        with self._lock:
            if self._pending is not None and not self._pending.done.is_set():
                raise DeadlineExceeded(f"{self.name}: an earlier call is still waiting for an answer")
            call: _Call[T] = _Call(func)
            self._pending = call  # type: ignore[assignment]
            threading.Thread(target=call, name=self.name, daemon=True).start()
        if not call.done.wait(self.timeout):
            raise DeadlineExceeded(f"{self.name}: no answer within {self.timeout:g}s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]
