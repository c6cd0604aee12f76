"""Drafting plan batches in worker processes while the planner's own process writes.

Why: deciding and rendering (Jinja, babel, escaping) is most of a first plan's CPU and
holds the GIL, so a second core helps only from a second process. The workers draft
(:class:`~dispatcher.service.planner.Drafter`: decisions and rendered messages, which
depend on nothing but the account, its own messages and the templates); the planner's
process keeps everything that depends on other accounts or on the database (caps per
person, the contact window verdict, the writes), in account order. So a plan with
workers writes exactly what a plan without them writes.

Why ``spawn``: the service plans from a thread of a process that runs other threads
(the scheduler, the web app); a forked child would inherit their locks. A spawned
worker rebuilds the approved templates from their sources (the same bytes, checked by
hash), the strategy and the creditor from pickled copies.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dispatcher.domain.account import Account
from dispatcher.domain.decision import Existing
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.error import DispatcherError, TemplateError
from dispatcher.template import TemplateSet
from dispatcher.template.context import Creditor

if TYPE_CHECKING:
    from dispatcher.service.planner import Draft, Drafter

_Source = tuple[ChannelKind, Path, bytes]
_Hashes = dict[tuple[ChannelKind, str, str], str]

_drafter: Drafter | None = None  # the worker process's own, set by _start


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


def _start(
    root: Path, sources: list[_Source], hashes: _Hashes, strategy: Strategy, creditor: Creditor
) -> None:
    """Worker start-up: compile the parent's templates and check they are the same ones."""
    from dispatcher.service.planner import Drafter

    global _drafter
    templates = TemplateSet.from_sources(root, sources)
    _, mine = template_sources(templates)
    if mine != hashes:
        raise TemplateError("plan worker: the templates rebuilt differ from the planner's")
    _drafter = Drafter(templates, strategy, creditor)


def _draft(
    accounts: Sequence[Account], existing: Mapping[str, Sequence[Existing]], now: datetime
) -> list[list[Draft]]:
    if _drafter is None:  # _start failed; the pool reports its error first
        raise RuntimeError("plan worker not started")
    return _drafter.draft(accounts, existing, now)


class DraftPool:
    """``workers`` processes drafting batches, at most ``2 * workers`` batches ahead."""

    def __init__(self, drafter: Drafter, workers: int) -> None:
        self.drafter = drafter
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> DraftPool:
        sources, hashes = template_sources(self.drafter.templates)
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(
                self.drafter.templates.root,
                sources,
                hashes,
                self.drafter.strategy,
                self.drafter.creditor,
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
            # A stopped or failed plan drops the batches still in flight (never written).
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def drafted(
        self,
        batches: Iterable[tuple[list[Account], dict[str, list[Existing]]]],
        now: datetime,
    ) -> Iterator[tuple[list[Account], list[list[Draft]]]]:
        """Each batch with its drafts, in the order of ``batches``.

        Bounded: at most ``2 * workers`` batches are read and drafted ahead of the one
        being written, so memory does not grow with the portfolio.
        """
        if self._executor is None:
            raise RuntimeError("DraftPool used outside its with-block")
        pending: deque[tuple[list[Account], Future[list[list[Draft]]]]] = deque()
        try:
            for accounts, existing in batches:
                pending.append((accounts, self._executor.submit(_draft, accounts, existing, now)))
                if len(pending) > 2 * self.workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        except BrokenProcessPool as exc:
            # The batches written so far stay (each whole); nothing of the rest is.
            raise DispatcherError(
                "plan: a worker process failed to start or died (its error is in the log "
                "above); the batches written so far are complete, the next plan goes on "
                "from there; [plan] workers = 1 plans in one process"
            ) from exc
