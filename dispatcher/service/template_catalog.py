"""Template versions and four-eyes approval (house rule HR-12): what may reach a customer.

A template's version is its content hash. The catalog (table ``template_version``) keeps
every version with its full source, author, time and state; the planner renders only the
approved version of each template, from the source kept here, whatever the file on disk
says now. Changing a file on disk and running :meth:`TemplateCatalog.sync` registers a
draft; it changes nothing that is sent until a second person approves it.

The rules (``dispatcher.domain.template_version``): the author cannot approve their own
version (``template.four_eyes``); a version with lint errors cannot be approved
(``template.lint_clean``); only drafts are approved or rejected, approving retires the
version it replaces (``template.lifecycle``). Every change is an audit record.

Existing installs: the first time the catalog is used and is empty, every file whose front
matter says ``approval = "approved"`` is registered as approved by ``system:bootstrap``
(see :meth:`TemplateCatalog.bootstrap`); after that front matter approves nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from threading import Lock
from typing import Final

from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.domain.template_version import (
    LINT_CLEAN,
    Refusal,
    VersionAction,
    VersionState,
    check_actor,
    check_approval,
    next_state,
)
from dispatcher.error import DispatcherError, InputError, TemplateError
from dispatcher.policy_book import PolicyBook
from dispatcher.service.template_lint import Finding, Severity, finding_from_error, lint
from dispatcher.store.sql import AuditEntry
from dispatcher.store.template_version import (
    NewVersion,
    TemplateKey,
    TemplateVersionStore,
    VersionRecord,
)
from dispatcher.template import CHANNEL_DIRS, Approval, TemplateInfo, TemplateSet
from dispatcher.template.context import Creditor

BOOTSTRAP_ACTOR: Final = "system:bootstrap"
BOOTSTRAP_NOTE: Final = "bootstrap: approved in repository front matter"

_PART: Final = {ChannelKind.SMS: "txt", ChannelKind.EMAIL: "txt", ChannelKind.LETTER: "typ"}


class ApprovalRefused(DispatcherError):
    """A rule of the approval process refused an action (exit 1 on the command line)."""

    def __init__(self, refusal: Refusal, findings: Sequence[Finding] = ()) -> None:
        self.refusal = refusal
        self.findings = tuple(findings)
        super().__init__(f"refused by {refusal}")


@dataclass(frozen=True)
class ApprovedTemplates:
    """What a plan may send: the approved version of each template, compiled.

    ``known`` is every (channel, template id) with any version in the catalog, so the
    planner can tell "not approved yet" from "no such template".
    """

    templates: TemplateSet
    known: frozenset[tuple[ChannelKind, str]]


@dataclass
class SyncReport:
    """What one sync registered."""

    drafted: list[VersionRecord] = field(default_factory=list)
    bootstrapped: list[VersionRecord] = field(default_factory=list)
    on_disk: int = 0


@dataclass(frozen=True)
class ApprovalOutcome:
    """What an approval did: the version now approved, and the one it retired."""

    approved: VersionRecord
    retired: VersionRecord | None


@dataclass(frozen=True)
class VersionDiff:
    """A unified diff from the approved version (or nothing) to another version."""

    base: VersionRecord | None
    target: str  # how the newer side is named: "@1a2b... (draft)" or "on disk"
    lines: list[str]


@dataclass(frozen=True)
class TemplateStatus:
    """One template's versions and what its file on disk holds now."""

    key: TemplateKey
    versions: list[VersionRecord]
    disk_sha256: str | None
    disk_label: str | None

    @property
    def disk_registered(self) -> bool:
        return self.disk_sha256 is None or any(v.sha256 == self.disk_sha256 for v in self.versions)


# Compiled approved sets by (root, approved hashes): a plan every few minutes recompiles
# only when an approval changed something. Content is verified against the hash on build.
_COMPILED: dict[tuple[str, tuple[tuple[TemplateKey, str], ...]], TemplateSet] = {}
_COMPILED_LOCK = Lock()
_COMPILED_MAX = 4


def part_paths(root: Path, key: TemplateKey) -> tuple[Path, ...]:
    """The file(s) of a template under ``root``: one, or an email's text and HTML parts."""
    channel, template_id, locale = key
    folder = root / CHANNEL_DIRS[channel]
    paths = [folder / f"{template_id}.{locale}.{_PART[channel]}.j2"]
    if channel is ChannelKind.EMAIL:
        paths.append(folder / f"{template_id}.{locale}.html.j2")
    return tuple(paths)


def _sources(root: Path, record: VersionRecord) -> list[tuple[ChannelKind, Path, bytes]]:
    texts = _texts(record)
    paths = part_paths(root, record.key)
    if len(paths) != len(texts):
        raise TemplateError(
            f"template_version {record.id} ({record.describe()}): has {len(texts)} part(s), "
            f"a {record.channel} template needs {len(paths)}"
        )
    return [(record.channel, p, t.encode("utf-8")) for p, t in zip(paths, texts, strict=True)]


def compile_versions(root: Path, records: Iterable[VersionRecord]) -> TemplateSet:
    """A TemplateSet of exactly these versions, each checked against its hash.

    Why check: the hash is what every message records; a stored source that no longer
    hashes to it was changed outside dispatcher and must not be sent.
    """
    records = list(records)
    templates = TemplateSet.from_sources(root, [s for r in records for s in _sources(root, r)])
    for record in records:
        if templates.info(*record.key).sha256 != record.sha256:
            raise TemplateError(
                f"template_version {record.id} ({record.describe()}): the stored source does "
                "not match its hash; it was changed outside dispatcher"
            )
    return templates


def _new_version(info: TemplateInfo, author: str) -> NewVersion:
    texts = info.texts
    return NewVersion(
        channel=info.channel,
        template_id=info.name,
        locale=info.locale,
        sha256=info.sha256,
        label=info.front_matter.version,
        source=texts[0],
        source_html=texts[1] if len(texts) > 1 else None,
        author=author,
    )


def _detail(record: VersionRecord | NewVersion, **extra: object) -> dict[str, object]:
    return {
        "channel": record.channel.value,
        "template_id": record.template_id,
        "locale": record.locale,
        "sha256": record.sha256,
        "label": record.label,
        **extra,
    }


class TemplateCatalog:
    """The service over ``template_version``: sync, approve, reject, retire, read, diff."""

    def __init__(
        self,
        versions: TemplateVersionStore,
        root: Path,
        *,
        disk: Callable[[], TemplateSet],
        strategy: Callable[[], Strategy],
        policies: Callable[[], PolicyBook],
        creditor: Creditor,
    ) -> None:
        """``disk`` loads the files under ``root``; strategy and policies are for the lint.

        Callables, so the planner's path (which reads only the database) never loads
        the files on disk, and a broken file there cannot stop approved sending.
        """
        self.versions = versions
        self.root = root
        self._disk = disk
        self._strategy = strategy
        self._policies = policies
        self.creditor = creditor

    # -- what is sent ---------------------------------------------------------------------
    def approved(self, now: datetime) -> ApprovedTemplates:
        """The approved version of every template, compiled from the stored sources.

        Bootstraps an empty catalog first (an install upgraded to this version, or new).
        """
        self.bootstrap(now)
        hashes = tuple(self.versions.approved_hashes())
        cache_key = (str(self.root), hashes)
        with _COMPILED_LOCK:
            templates = _COMPILED.get(cache_key)
        if templates is None:
            templates = compile_versions(self.root, self.versions.approved())
            with _COMPILED_LOCK:
                while len(_COMPILED) >= _COMPILED_MAX:
                    del _COMPILED[next(iter(_COMPILED))]
                _COMPILED[cache_key] = templates
        return ApprovedTemplates(templates, frozenset(self.versions.known_templates()))

    def bootstrap(self, now: datetime) -> list[VersionRecord]:
        """On an empty catalog, register the approved files on disk as approved.

        The migration path for installs from before the catalog: what the repository's
        front matter called approved was what they sent, so it stays approved, by
        ``system:bootstrap`` with the note "bootstrap: approved in repository front
        matter". Files whose front matter says draft are not registered (their author
        does that with ``templates sync``). Once the catalog has any row, front matter
        approves nothing; every later change needs four eyes (HR-12).
        """
        if self.versions.count() > 0:
            return []
        found = [
            replace(
                _new_version(info, BOOTSTRAP_ACTOR),
                state=VersionState.APPROVED,
                approved_by=BOOTSTRAP_ACTOR,
                note=BOOTSTRAP_NOTE,
            )
            for info in self._disk_infos()
            if info.front_matter.approval is Approval.APPROVED
        ]
        audit = [
            AuditEntry(
                "template_version_approved",
                BOOTSTRAP_ACTOR,
                now,
                detail=_detail(v, note=BOOTSTRAP_NOTE, bootstrap=True),
            )
            for v in found
        ]
        return self.versions.register(found, now, audit)

    # -- changes --------------------------------------------------------------------------
    def sync(self, now: datetime, author: str) -> SyncReport:
        """Register every file content on disk the catalog does not know as a draft.

        ``author`` is the person submitting it, who then may not approve it (HR-12).
        Nothing sent changes. Raises TemplateError naming the file when a template on
        disk does not load (fix it first: the catalog keeps only loadable wording).
        """
        refusal = check_actor(author)
        if refusal is not None:
            raise InputError(f"--as: {refusal.message}")
        author = author.strip()
        report = SyncReport(bootstrapped=self.bootstrap(now))
        known = {(v.key, v.sha256) for v in self.versions.versions()}
        infos = self._disk_infos()
        report.on_disk = len(infos)
        new = [
            _new_version(info, author)
            for info in infos
            if ((info.channel, info.name, info.locale), info.sha256) not in known
        ]
        audit = [
            AuditEntry("template_version_drafted", author, now, detail=_detail(v)) for v in new
        ]
        report.drafted = self.versions.register(new, now, audit)
        return report

    def draft(
        self, key: TemplateKey, texts: Sequence[str], *, author: str, now: datetime
    ) -> tuple[VersionRecord, bool]:
        """Register wording written elsewhere (the web editor) as a draft by ``author``.

        ``texts`` are the template's file contents as :func:`part_paths` names them (an
        email: text part, then HTML part). Returns the version and whether it is new: the
        same wording twice is one version (its hash). Raises TemplateError naming the part
        and line when the wording does not load; only loadable wording is kept. Nothing
        sent changes until a second person approves it (HR-12).
        """
        refusal = check_actor(author)
        if refusal is not None:
            raise InputError(refusal.message)
        author = author.strip()
        templates = self.compile_texts(key, texts)
        info = templates.info(*key)
        known = next((v for v in self.versions.versions(*key) if v.sha256 == info.sha256), None)
        if known is not None:
            return known, False
        version = _new_version(info, author)
        audit = [AuditEntry("template_version_drafted", author, now, detail=_detail(version))]
        registered = self.versions.register([version], now, audit)
        return (registered[0] if registered else self.find(key, info.sha256)), bool(registered)

    def compile_texts(self, key: TemplateKey, texts: Sequence[str]) -> TemplateSet:
        """The template ``key`` compiled from ``texts`` (one per part), with every check
        of a load: file name and front matter agree, syntax, known variables only."""
        paths = part_paths(self.root, key)
        if len(texts) != len(paths):
            raise InputError(f"a {key[0]} template has {len(paths)} part(s), got {len(texts)}")
        sources = [
            (key[0], path, text.replace("\r\n", "\n").encode("utf-8"))
            for path, text in zip(paths, texts, strict=True)
        ]
        templates = TemplateSet.from_sources(self.root, sources)
        if not templates.has(*key):
            raise TemplateError(
                f"{paths[0]}: the front matter does not name {' '.join(map(str, key))}"
            )
        return templates

    def lint_texts(
        self, key: TemplateKey, texts: Sequence[str]
    ) -> tuple[TemplateSet | None, list[Finding]]:
        """The lint findings for wording not stored yet (what the editor previews); the
        compiled template when it loads."""
        try:
            templates = self.compile_texts(key, texts)
        except TemplateError as exc:
            rule = "lint.unknown_variable" if "unknown variable" in str(exc) else "lint.load"
            return None, [finding_from_error(exc, rule=rule, fallback_file=str(self.root))]
        return templates, self._lint_compiled(templates, key)

    def approve(
        self, key: TemplateKey, sha: str, *, approver: str, now: datetime, note: str | None = None
    ) -> ApprovalOutcome:
        """Approve one draft (named by a hash prefix) and retire the version it replaces.

        Refused (ApprovalRefused) when the approver wrote it (``template.four_eyes``),
        it is not a draft (``template.lifecycle``) or it has lint errors
        (``template.lint_clean``). The approval and the retirement are audited together.
        """
        version = self.find(key, sha)
        refusal = check_approval(version.state, version.author, approver)
        if refusal is not None:
            raise ApprovalRefused(refusal)
        errors = [f for f in self.lint_version(version) if f.severity is Severity.ERROR]
        if errors:
            raise ApprovalRefused(
                Refusal(
                    LINT_CLEAN,
                    f"{version.describe()} has {len(errors)} lint error(s); fix the wording, "
                    "sync and approve the new version",
                ),
                errors,
            )
        approver = approver.strip()
        note = (note or "").strip() or None

        def audit(retired: VersionRecord | None) -> list[AuditEntry]:
            replaced = retired.sha256 if retired is not None else None
            entries = [
                AuditEntry(
                    "template_version_approved",
                    approver,
                    now,
                    detail=_detail(version, author=version.author, note=note, replaces=replaced),
                )
            ]
            if retired is not None:
                entries.append(
                    AuditEntry(
                        "template_version_retired",
                        approver,
                        now,
                        detail=_detail(retired, replaced_by=version.sha256),
                    )
                )
            return entries

        retired = self.versions.approve(version, approver=approver, note=note, now=now, audit=audit)
        return ApprovalOutcome(self.find(key, version.sha256), retired)

    def reject(
        self, key: TemplateKey, sha: str, *, who: str, note: str, now: datetime
    ) -> VersionRecord:
        """Reject a draft with the reason (anyone may, the author too: nothing is sent)."""
        version = self.find(key, sha)
        self._check_change(version, who, VersionAction.REJECT, note)
        who = who.strip()
        self.versions.reject(
            version,
            who=who,
            note=note.strip(),
            now=now,
            audit=[
                AuditEntry(
                    "template_version_rejected",
                    who,
                    now,
                    detail=_detail(version, author=version.author, note=note.strip()),
                )
            ],
        )
        return self.find(key, version.sha256)

    def retire(
        self, key: TemplateKey, sha: str, *, who: str, note: str, now: datetime
    ) -> VersionRecord:
        """Retire an approved version with no successor: the template stops being sent
        (its steps are held ``template_not_approved``) until another version is approved."""
        version = self.find(key, sha)
        self._check_change(version, who, VersionAction.RETIRE, note)
        who = who.strip()
        self.versions.retire(
            version,
            who=who,
            note=note.strip(),
            now=now,
            audit=[
                AuditEntry(
                    "template_version_retired",
                    who,
                    now,
                    detail=_detail(version, note=note.strip(), replaced_by=None),
                )
            ],
        )
        return self.find(key, version.sha256)

    def _check_change(
        self, version: VersionRecord, who: str, action: VersionAction, note: str
    ) -> None:
        refusal = check_actor(who)
        if refusal is not None:
            raise InputError(f"--as: {refusal.message}")
        if not note.strip():
            raise InputError(f"--note must say why the version is {action.value}d")
        moved = next_state(version.state, action)
        if isinstance(moved, Refusal):
            raise ApprovalRefused(moved)

    # -- reading --------------------------------------------------------------------------
    def find(self, key: TemplateKey, sha: str) -> VersionRecord:
        """The version of ``key`` whose hash starts with ``sha`` (at least 4 hex digits)."""
        prefix = sha.strip().lower()
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise InputError(f"--sha {sha!r}: give at least 4 hex digits of the version's hash")
        versions = self.versions.versions(*key)
        name = f"{key[0]} {key[1]} {key[2]}"
        if not versions:
            raise InputError(f"no versions of {name}; register it with `templates sync --as NAME`")
        found = [v for v in versions if v.sha256.startswith(prefix)]
        if not found:
            have = ", ".join(f"@{v.sha256[:12]} ({v.state})" for v in versions)
            raise InputError(f"--sha {sha}: no version of {name} starts with it; there are {have}")
        if len(found) > 1:
            raise InputError(f"--sha {sha}: matches {len(found)} versions of {name}; give more")
        return found[0]

    def status(self) -> tuple[list[TemplateStatus], str | None]:
        """Every template with versions or a file on disk, and a disk load error if any."""
        versions = self.versions.versions()
        by_key: dict[TemplateKey, list[VersionRecord]] = {}
        for version in versions:
            by_key.setdefault(version.key, []).append(version)
        disk: dict[TemplateKey, TemplateInfo] = {}
        problem = None
        try:
            disk = {(i.channel, i.name, i.locale): i for i in self._disk_infos()}
        except TemplateError as exc:
            problem = str(exc)
        keys = sorted(set(by_key) | set(disk))
        return [
            TemplateStatus(
                key,
                by_key.get(key, []),
                disk[key].sha256 if key in disk else None,
                disk[key].front_matter.version if key in disk else None,
            )
            for key in keys
        ], problem

    def lint_version(self, version: VersionRecord) -> list[Finding]:
        """The lint findings for this version's own wording (not the file on disk)."""
        try:
            templates = compile_versions(self.root, [version])
        except TemplateError as exc:
            rule = "lint.unknown_variable" if "unknown variable" in str(exc) else "lint.load"
            return [finding_from_error(exc, rule=rule, fallback_file=str(self.root))]
        return self._lint_compiled(templates, version.key)

    def _lint_compiled(self, templates: TemplateSet, key: TemplateKey) -> list[Finding]:
        files = {str(p) for p in part_paths(self.root, key)}
        findings = lint(
            templates, self._strategy(), self._policies(), [key[2]], creditor=self.creditor
        )
        return [
            f
            for f in findings
            if f.file.split("#")[0] in files and f.rule != "lint.missing_template"
        ]

    def diff(self, key: TemplateKey, sha: str | None = None) -> VersionDiff:
        """What changes against the approved version: a version by hash, else the newest
        draft, else the file on disk (difflib's unified diff, per file)."""
        versions = self.versions.versions(*key)
        base = next((v for v in versions if v.state is VersionState.APPROVED), None)
        if sha is not None:
            target = self.find(key, sha)
            label, texts = f"@{target.sha256[:12]} ({target.state})", _texts(target)
        else:
            drafts = [v for v in versions if v.state is VersionState.DRAFT]
            if drafts:
                label, texts = f"@{drafts[-1].sha256[:12]} (draft)", _texts(drafts[-1])
            else:
                info = next(
                    (i for i in self._disk_infos() if (i.channel, i.name, i.locale) == key), None
                )
                if info is None:
                    raise InputError(f"no draft and no file on disk for {' '.join(map(str, key))}")
                label, texts = f"@{info.sha256[:12]} (on disk)", list(info.texts)
        return self._diff(key, base, label, texts)

    def diff_texts(self, key: TemplateKey, texts: Sequence[str]) -> VersionDiff:
        """What wording not saved yet (the editor's) changes against the approved version."""
        versions = self.versions.versions(*key)
        base = next((v for v in versions if v.state is VersionState.APPROVED), None)
        return self._diff(key, base, "(edited)", texts)

    def _diff(
        self, key: TemplateKey, base: VersionRecord | None, label: str, texts: Sequence[str]
    ) -> VersionDiff:
        before = _texts(base) if base is not None else ["" for _ in texts]
        base_label = f"@{base.sha256[:12]} (approved)" if base is not None else "(none approved)"
        lines: list[str] = []
        for path, old, new in zip(part_paths(self.root, key), before, texts, strict=False):
            lines += difflib.unified_diff(
                old.splitlines(keepends=True),
                new.replace("\r\n", "\n").splitlines(keepends=True),
                fromfile=f"{path} {base_label}",
                tofile=f"{path} {label}",
            )
        return VersionDiff(base, label, lines)

    def _disk_infos(self) -> list[TemplateInfo]:
        templates = self._disk()
        return [templates.info(*key) for key in templates.names()]


def _texts(version: VersionRecord) -> list[str]:
    if version.source_html is None:
        return [version.source]
    return [version.source, version.source_html]
