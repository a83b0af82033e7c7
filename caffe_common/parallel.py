"""An ordered parallel map over spawned worker processes, for per-item work (decoding, encoding) whose
results the main process consumes in input order (e.g. to write a database sequentially).

Workers are *spawned*, not forked (Caffe/OpenBLAS threads do not survive a fork), run with
single-threaded BLAS and ignore SIGINT, so a Ctrl-C reaches only the main process, which stops them.
At most ``in_flight`` items are submitted ahead of the one being consumed, so memory stays bounded
whatever the input size. A worker that dies (out of memory, a native crash) raises
:class:`WorkerDiedError` naming how it ended, never a hang.
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Seconds between the main thread's wake-ups while it waits for a result (see :func:`_wait_for`).
WAKE_UP_S = 0.25


class WorkerDiedError(RuntimeError):
    """A worker process ended abruptly (the message says how and what to try); ``in_flight`` holds the
    items that were submitted and not yet consumed when it happened."""

    def __init__(self, message: str, cause: str = "", in_flight: list | None = None):
        super().__init__(message)
        self.cause = cause
        self.in_flight = in_flight or []


def default_workers() -> int:
    """The cores this process may use (``os.cpu_count()`` where affinity is unknown)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


@contextmanager
def _spawn_environment() -> Iterator[None]:
    """While workers start: single-threaded BLAS and SIGINT ignored, which they inherit."""
    saved = {key: os.environ.get(key) for key in _SINGLE_THREAD_ENV}
    os.environ.update({key: "1" for key in _SINGLE_THREAD_ENV})
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker_processes(executor: Any) -> list[Any]:
    # ProcessPoolExecutor has no public way to reach its processes (to stop running calls, read exit codes).
    return list((getattr(executor, "_processes", None) or {}).values())


def _death_cause(executor: Any) -> str:
    """``killed by SIGKILL`` / ``exit status 1``... of the worker(s) that died, as far as known."""
    causes = set()
    for process in _worker_processes(executor):
        code = process.exitcode
        if code not in (None, 0, -signal.SIGTERM):  # alive, clean, or stopped by the pool
            causes.add(f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")
    return ", ".join(sorted(causes)) or "ended abruptly"


def _wait_for(future: Any) -> Any:
    """``future.result()``, waking up every :data:`WAKE_UP_S`. The kernel may deliver a Ctrl-C to any thread of
    the process (the pool's threads included); Python then runs the handler only when the main thread next runs
    Python code, which an untimed wait for a result that never comes would never do: a hang."""
    while True:
        try:
            return future.result(timeout=WAKE_UP_S)
        except TimeoutError:
            if future.done():  # the function itself raised TimeoutError
                raise


def ordered_map(func: Callable[[T], R], items: Iterable[T], workers: int, *,
                initializer: Callable[..., None] | None = None, initargs: tuple = (),
                in_flight: int | None = None) -> Iterator[R]:
    """``func(item)`` for every item, yielded in input order; ``workers > 1`` runs them in spawned processes.

    ``func`` and ``initializer`` must be importable module-level functions (they and ``initargs`` are
    pickled). With ``workers <= 1`` everything runs here, in this process (``initializer`` is not
    called). An exception raised by ``func`` is re-raised here; the pool is stopped on any error or
    interrupt. A dead worker raises :class:`WorkerDiedError`.
    """
    if workers <= 1:
        yield from map(func, items)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ahead = in_flight or 4 * workers
    executor = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer, initargs)
    todo = iter(items)
    pending: deque = deque()
    try:
        with _spawn_environment():  # the first submissions start the workers
            pending.extend((item, executor.submit(func, item)) for item in itertools.islice(todo, ahead))
        while pending:
            try:
                result = _wait_for(pending[0][1])
                # A worker that dies while this result is read breaks the pool, so submit can raise too: the
                # next item is queued first, to be reported as in flight if its submit fails.
                for item in itertools.islice(todo, 1):
                    pending.append((item, None))
                    pending[-1] = (item, executor.submit(func, item))
            except BrokenProcessPool:
                cause = _death_cause(executor)
                raise WorkerDiedError(
                    f"a worker process died ({cause}); the usual causes are running out of memory (SIGKILL) and "
                    "a crash in native code (SIGABRT, SIGSEGV); try fewer workers", cause,
                    [queued for queued, _ in pending]) from None
            pending.popleft()
            yield result
    except BaseException:
        processes = _worker_processes(executor)
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    executor.shutdown(wait=True)
