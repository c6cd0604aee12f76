"""Planning batches in worker processes while the planner's own process writes.

Why: reading, deciding, rendering (Jinja, babel, escaping) and settling are nearly all of
a first plan's CPU and hold the GIL, so a second core helps only from a second process.
Each worker plans whole batches (:class:`~dispatcher.service.planner.BatchPlanner`)
through its own database connection: accounts, holds, messages, the caps of the persons
that lie wholly in the batch, and the rows to write. The planner's process lists the
pages, settles the few accounts a batch defers (a person reaching into other batches,
whose caps depend on what those wrote) and writes each batch, in account order. So a plan
with workers writes exactly what a plan without them writes.

Why ``spawn``: the service plans from a thread of a process that runs other threads
(the scheduler, the web app); a forked child would inherit their locks. A spawned
worker rebuilds the approved templates from their sources (the same bytes, checked by
hash), the strategy, the creditor and the contact timing from pickled copies, and its
own engine from the database URL.
"""

from __future__ import annotations

import multiprocessing
import pickle
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import DispatcherError, TemplateError
from dispatcher.store.engine import build_store
from dispatcher.store.sql import Page, SqlStore
from dispatcher.template import TemplateSet

if TYPE_CHECKING:
    from dispatcher.service.planner import BatchPlanner, BatchResult

_Source = tuple[ChannelKind, Path, bytes]
_Hashes = dict[tuple[ChannelKind, str, str], str]

# The worker process's own, set by _start.
_planner: BatchPlanner | None = None
_store: SqlStore | None = None


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


def _start(database_url: str, setup_file: Path) -> None:
    """Worker start-up: compile the parent's templates, check they are the same ones, and
    open the database.

    The templates, strategy, creditor and timing come pickled in ``setup_file``, not as
    arguments: arguments travel through the pipe the new process reads only once it has
    imported everything, so a large one would hold the parent until then, one worker
    after the other.
    """
    from dispatcher.service.planner import BatchPlanner

    global _planner, _store
    # Written by the parent a moment ago in its own 0700 temporary directory.
    setup = pickle.loads(setup_file.read_bytes())  # noqa: S301
    root, sources, hashes, strategy, creditor, timing, catalogued = setup
    templates = TemplateSet.from_sources(root, sources)
    _, mine = template_sources(templates)
    if mine != hashes:
        raise TemplateError("plan worker: the templates rebuilt differ from the planner's")
    _planner = BatchPlanner(templates, strategy, creditor, timing, catalogued)
    _store = build_store(database_url)


def _plan(page: Page, now: datetime) -> BatchResult:
    if _planner is None or _store is None:  # _start failed; the pool reports its error first
        raise RuntimeError("plan worker not started")
    return _planner.plan_batch(_store, page, now)


class BatchPool:
    """``workers`` processes planning batches, at most ``2 * workers`` batches ahead."""

    def __init__(self, planner: BatchPlanner, store: SqlStore, workers: int) -> None:
        self.planner = planner
        self.store = store
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._setup: tempfile.TemporaryDirectory[str] | None = None

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
        )
        self._setup = tempfile.TemporaryDirectory(prefix="dispatcher-plan-")
        setup_file = Path(self._setup.name) / "setup.pickle"
        setup_file.write_bytes(pickle.dumps(setup))
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            # The URL (it may carry a password) goes through the pipe, never to a file.
            initargs=(self.store.engine.url.render_as_string(hide_password=False), setup_file),
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            # A stopped or failed plan drops the batches still in flight (never written).
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._setup is not None:
            self._setup.cleanup()
            self._setup = None

    def planned(self, pages: Iterable[Page], now: datetime) -> Iterator[BatchResult]:
        """Each page planned, in the order of ``pages``.

        Bounded: at most ``2 * workers`` batches are planned ahead of the one being
        written, so memory does not grow with the portfolio.
        """
        if self._executor is None:
            raise RuntimeError("BatchPool used outside its with-block")
        pending: deque[Future[BatchResult]] = deque()
        try:
            for page in pages:
                pending.append(self._executor.submit(_plan, page, now))
                if len(pending) > 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as exc:
            # The batches written so far stay (each whole); nothing of the rest is.
            raise DispatcherError(
                "plan: a worker process failed to start or died (its error is in the log "
                "above); the batches written so far are complete, the next plan goes on "
                "from there; [plan] workers = 1 plans in one process"
            ) from exc
