"""Planning and writing batches in worker processes, in page order.

Why: reading, deciding, rendering (Jinja, babel, escaping), settling and writing are
nearly all of a first plan's CPU and hold the GIL, so a second core helps only from a
second process. Each worker plans whole batches
(:class:`~dispatcher.service.planner.BatchPlanner`) through its own database connection
and writes them itself, taking turns: batch k is written only after batch k-1 has been
(:class:`WriteTurn`), and only once the planner's process has granted it, which it does
only after asking ``stop``. So the batches are written in page order, the accounts a batch
defers (a person reaching into other batches) are settled after the batches before are
written, and nothing but counts comes back to the planner's process: with workers a plan
writes exactly what it writes without them, the audit ids included.

Why ``spawn``: the service plans from a thread of a process that runs other threads
(the scheduler, the web app); a forked child would inherit their locks. A spawned
worker rebuilds the approved templates from their sources (the same bytes, checked by
hash), the strategy, the creditor and the contact timing from pickled copies, and its
own engine from the database URL.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dispatcher import heap
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import DispatcherError, TemplateError
from dispatcher.store.engine import build_store
from dispatcher.store.sql import Page, Reviewing, SqlStore
from dispatcher.template import TemplateSet

if TYPE_CHECKING:
    from dispatcher.service.planner import BatchPlanner

_Source = tuple[ChannelKind, Path, bytes]
_Hashes = dict[tuple[ChannelKind, str, str], str]
Written = tuple[int, Counter[tuple[str, str, str]]]  # a written batch: accounts, outcomes


class WriteTurn:
    """Whose turn it is to write, shared by the planner's process and its workers.

    The planner grants batch k once batch k-1 is written and ``stop`` said go on; a worker
    with batch k drafted waits for that, or for the plan to stop (then it writes nothing).
    """

    def __init__(self, context: BaseContext) -> None:
        self._turn = context.RawValue("q", -1)
        self._stopped = context.RawValue("b", 0)
        self._changed = context.Condition()

    def grant(self, index: int) -> None:
        with self._changed:
            self._turn.value = index
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped.value = 1
            self._changed.notify_all()

    def wait(self, index: int) -> bool:
        """True once batch ``index`` may be written; False if the plan stopped first."""
        with self._changed:
            self._changed.wait_for(lambda: self._turn.value == index or self._stopped.value)
            return not self._stopped.value


# The worker process's own, set by _start.
_planner: BatchPlanner | None = None
_store: SqlStore | None = None
_turn: WriteTurn | None = None


def shareable(store: SqlStore) -> bool:
    """Whether worker processes can open the store's database (not an in-memory SQLite)."""
    url = store.engine.url
    return not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


def template_sources(templates: TemplateSet) -> tuple[list[_Source], _Hashes]:
    """Every file of ``templates`` as (channel, path, bytes), and each template's hash."""
    sources: list[_Source] = []
    hashes: _Hashes = {}
    for channel, name, locale in templates.names():
        info = templates.info(channel, name, locale)
        hashes[(channel, name, locale)] = info.sha256
        for path, text in zip(info.files, info.texts, strict=True):
            sources.append((channel, path, text.encode("utf-8")))
    return sources, hashes


def _start(database_url: str, busy_timeout: float, setup_file: Path, turn: WriteTurn) -> None:
    """Worker start-up: compile the parent's templates, check they are the same ones, and
    open the database.

    The templates, strategy, creditor and timing come pickled in ``setup_file``, not as
    arguments: arguments travel through the pipe the new process reads only once it has
    imported everything, so a large one would hold the parent until then, one worker
    after the other.
    """
    from dispatcher.service.planner import BatchPlanner

    global _planner, _store, _turn
    threading.Thread(target=_exit_with_parent, name="plan-worker-watch", daemon=True).start()
    # Written by the parent a moment ago in its own 0700 temporary directory.
    setup = pickle.loads(setup_file.read_bytes())  # noqa: S301
    root, sources, hashes, strategy, creditor, timing, catalogued, review_within = setup
    templates = TemplateSet.from_sources(root, sources)
    _, mine = template_sources(templates)
    if mine != hashes:
        raise TemplateError("plan worker: the templates rebuilt differ from the planner's")
    _planner = BatchPlanner(
        templates, strategy, creditor, timing, catalogued, review_within=review_within
    )
    _store = build_store(database_url, busy_timeout_seconds=busy_timeout)
    _turn = turn
    heap.tune()


def _exit_with_parent() -> None:
    """End this worker when the planner's process ends, however it ends.

    A worker waits on its task queue or for its turn to write; if the planner is killed
    (SIGKILL, out of memory) nothing would ever wake it, and it would live on, holding its
    database connection. Its open transaction, if any, is rolled back: batches stay whole.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _plan(
    page: Page, index: int, now: datetime, reviewing: Reviewing | None, dry_run: bool
) -> Written | None:
    """Plan batch ``index`` of the plan, then, in its turn, settle what it deferred and
    write it; None if the plan stopped before its turn came."""
    if _planner is None or _store is None or _turn is None:
        raise RuntimeError("plan worker not started")  # _start failed; the pool says so first
    result = _planner.plan_batch(_store, page, now, reviewing)
    if not _turn.wait(index):
        return None
    _planner.write_batch(_store, result, now, dry_run=dry_run)
    return result.accounts, result.counts


class BatchPool:
    """``workers`` processes planning and writing batches, at most ``2 * workers`` ahead."""

    def __init__(self, planner: BatchPlanner, store: SqlStore, workers: int) -> None:
        self.planner = planner
        self.store = store
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._setup: tempfile.TemporaryDirectory[str] | None = None
        self._context = multiprocessing.get_context("spawn")
        self._turn = WriteTurn(self._context)
        self.stopped = False

    def __enter__(self) -> BatchPool:
        planner = self.planner
        sources, hashes = template_sources(planner.templates)
        setup = (
            planner.templates.root,
            sources,
            hashes,
            planner.strategy,
            planner.creditor,
            planner.timing,
            planner.catalogued,
            planner.review_within,
        )
        self._setup = tempfile.TemporaryDirectory(prefix="dispatcher-plan-")
        setup_file = Path(self._setup.name) / "setup.pickle"
        setup_file.write_bytes(pickle.dumps(setup))
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_start,
            # The URL (it may carry a password) goes through the pipe, never to a file.
            initargs=(
                self.store.engine.url.render_as_string(hide_password=False),
                self.store.busy_timeout_seconds,
                setup_file,
                self._turn,
            ),
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            # A stopped or failed plan drops the batches still in flight (never written):
            # those waiting for their turn are told so, and stop.
            self._turn.stop()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._setup is not None:
            self._setup.cleanup()
            self._setup = None

    def written(
        self,
        pages: Iterable[Page],
        now: datetime,
        reviewing: Reviewing | None = None,
        *,
        dry_run: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Written]:
        """Plan and write each page, in order; yields each batch once it is written.

        ``stop`` is asked before each batch's turn: once it says stop, nothing more is
        written and :attr:`stopped` is set. Bounded: at most ``2 * workers`` batches are
        planned ahead of the one being written, so memory does not grow with the portfolio.
        """
        if self._executor is None:
            raise RuntimeError("BatchPool used outside its with-block")
        executor = self._executor
        pending: deque[Future[Written | None]] = deque()
        numbered = enumerate(pages)

        def submit() -> None:
            for index, page in itertools.islice(numbered, 1):
                pending.append(executor.submit(_plan, page, index, now, reviewing, dry_run))

        try:
            for _ in range(2 * self.workers + 1):
                submit()
            index = 0
            while pending:
                if stop is not None and stop():
                    self.stopped = True
                    self._turn.stop()
                    return
                self._turn.grant(index)
                done = pending.popleft().result()
                if done is None:  # cannot be: only this process stops the plan
                    raise RuntimeError(f"plan worker skipped batch {index} in its turn")
                index += 1
                submit()
                yield done
        except BrokenProcessPool as exc:
            # The batches written so far stay (each whole); nothing of the rest is.
            raise DispatcherError(
                "plan: a worker process failed to start or died (its error is in the log "
                "above); the batches written so far are complete, the next plan goes on "
                "from there; [plan] workers = 1 plans in one process"
            ) from exc
