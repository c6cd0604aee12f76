"""What compliance works with in the browser: the template list, previews, the policy book.

The list joins the catalog's versions (:mod:`dispatcher.service.template_catalog`) with
the strategy (which stages send each template). A preview renders wording, stored or
just edited and not saved, against sample data or a real account, with what the lint
says and what an SMS costs; it is what ``dispatcher templates preview`` shows too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dispatcher.domain.account import Account
from dispatcher.domain.policy import RULES
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.domain.template_version import FOUR_EYES, LIFECYCLE, LINT_CLEAN, VersionState
from dispatcher.error import TemplateError
from dispatcher.policy_book import PolicyBook
from dispatcher.service.template_catalog import TemplateCatalog, TemplateStatus
from dispatcher.service.template_lint import Finding, Severity, max_sms_segments
from dispatcher.sms import SmsInfo, analyse
from dispatcher.store.template_version import TemplateKey, VersionRecord
from dispatcher.template import RenderedMessage, TemplateSet, build_context
from dispatcher.template.context import Creditor
from dispatcher.template.sample import sample_context


@dataclass(frozen=True)
class TemplateRow:
    """One template (channel, name, locale) in the list, with where it stands."""

    key: TemplateKey
    stages: tuple[str, ...]  # the strategy stages with a step that sends it
    approved: VersionRecord | None
    drafts: tuple[VersionRecord, ...]
    versions: tuple[VersionRecord, ...]
    disk_registered: bool

    @property
    def state(self) -> str:
        """approved, draft (none approved, a draft waits), retired (none approved, none
        waiting), or "on disk only" (a file the catalog has no version of)."""
        if self.approved is not None:
            return VersionState.APPROVED.value
        if self.drafts:
            return VersionState.DRAFT.value
        if self.versions:
            return self.versions[-1].state.value
        return "on disk only"


def step_of(strategy: Strategy, channel: ChannelKind, name: str) -> tuple[str, int]:
    """(stage id, DPD) of the first step that sends this template, else a sample."""
    for stage in strategy.stages:
        for step in stage.steps:
            if step.channel is channel and step.template == name:
                return stage.id, stage.step_dpd(step)
    return "early", 7


def template_rows(
    statuses: Sequence[TemplateStatus],
    strategy: Strategy,
    *,
    channel: ChannelKind | None = None,
    stage: str | None = None,
    locale: str | None = None,
) -> list[TemplateRow]:
    """The catalog's templates, filtered by channel, stage and locale."""
    sends: dict[tuple[ChannelKind, str], list[str]] = {}
    for s in strategy.stages:
        for step in s.steps:
            senders = sends.setdefault((step.channel, step.template), [])
            if s.id not in senders:
                senders.append(s.id)
    rows = []
    for status in statuses:
        kind, name, template_locale = status.key
        stages = tuple(sends.get((kind, name), ()))
        if channel is not None and kind is not channel:
            continue
        if stage is not None and stage not in stages:
            continue
        if locale is not None and template_locale != locale:
            continue
        versions = tuple(status.versions)
        rows.append(
            TemplateRow(
                key=status.key,
                stages=stages,
                approved=next((v for v in versions if v.state is VersionState.APPROVED), None),
                drafts=tuple(v for v in versions if v.state is VersionState.DRAFT),
                versions=versions,
                disk_registered=status.disk_registered,
            )
        )
    return rows


@dataclass(frozen=True)
class Preview:
    """One rendering of one template's wording, and what it costs and breaks."""

    key: TemplateKey
    data: str  # "sample data" or "account A-1"
    dpd: int | None
    message: RenderedMessage | None
    error: str | None  # why it did not render
    findings: tuple[Finding, ...] = ()
    sms: SmsInfo | None = None
    sms_limit: int | None = None
    sha256: str | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def over_limit(self) -> bool:
        return (
            self.sms is not None
            and self.sms_limit is not None
            and (self.sms.segments > self.sms_limit)
        )


def preview_context(
    strategy: Strategy,
    creditor: Creditor,
    key: TemplateKey,
    *,
    account: Account | None = None,
    now: datetime | None = None,
    dpd: int | None = None,
) -> dict[str, object]:
    """The context a template is rendered with: the account's at ``now`` (as the planner
    builds it), or the sample account's at ``dpd`` (default: the step's day)."""
    channel, name, locale = key
    if account is not None:
        if now is None:
            raise ValueError("an account preview renders as of a time: give now")
        actual = days_past_due(account.due_date, account.timezone, now)
        stage = strategy.stage_for(actual)
        return build_context(
            account,
            dpd=actual,
            stage_id=stage.id if stage is not None else "none",
            creditor=creditor,
            now=now,
        )
    stage_id, step_dpd = step_of(strategy, channel, name)
    return sample_context(
        locale, dpd=dpd if dpd is not None else step_dpd, stage_id=stage_id, creditor=creditor
    )


def preview(
    catalog: TemplateCatalog,
    strategy: Strategy,
    policies: PolicyBook,
    key: TemplateKey,
    texts: Sequence[str],
    *,
    account: Account | None = None,
    now: datetime | None = None,
    dpd: int | None = None,
) -> Preview:
    """Render ``texts`` (the template's parts, as in the editor) for sample data or
    ``account``, with the lint findings of that wording and, for SMS, its segments."""
    data = "sample data" if account is None else f"account {account.account_id}"
    templates, findings = catalog.lint_texts(key, texts)
    if templates is None:
        message = findings[0].message if findings else "does not load"
        return Preview(key, data, None, None, message, tuple(findings))
    return _render(catalog, templates, strategy, policies, key, data, findings, account, now, dpd)


def _render(
    catalog: TemplateCatalog,
    templates: TemplateSet,
    strategy: Strategy,
    policies: PolicyBook,
    key: TemplateKey,
    data: str,
    findings: Sequence[Finding],
    account: Account | None,
    now: datetime | None,
    dpd: int | None,
) -> Preview:
    context = preview_context(strategy, catalog.creditor, key, account=account, now=now, dpd=dpd)
    sha = templates.info(*key).sha256
    shown_dpd = context.get("dpd")
    day = shown_dpd if isinstance(shown_dpd, int) else None
    try:
        message = templates.render(key[0], key[1], key[2], context)
    except TemplateError as exc:
        return Preview(key, data, day, None, str(exc), tuple(findings), sha256=sha)
    sms = analyse(message.body) if key[0] is ChannelKind.SMS else None
    return Preview(
        key,
        data,
        day,
        message,
        None,
        tuple(findings),
        sms=sms,
        sms_limit=max_sms_segments(policies) if sms is not None else None,
        sha256=sha,
    )


def texts_of(version: VersionRecord) -> list[str]:
    """A stored version's parts, as the editor shows them."""
    return (
        [version.source] if version.source_html is None else [version.source, version.source_html]
    )


@dataclass(frozen=True)
class PolicyRule:
    """One rule of the policy book as compliance reads it: id, what it says, its source."""

    pack: str
    kind: str  # window, holiday, cap, help, hold, approval
    id: str
    channels: tuple[str, ...]
    says: str
    source: str


@dataclass
class PolicyOverview:
    packs: list[tuple[str, str | None, str]] = field(default_factory=list)  # id, parent, text
    rules: list[PolicyRule] = field(default_factory=list)
    stages: list[tuple[str, str, list[tuple[str, int, str, str]]]] = field(default_factory=list)


def policy_overview(book: PolicyBook, strategy: Strategy) -> PolicyOverview:
    """Every pack and rule with its id and source, the holds and approval rules the code
    enforces, and the strategy's ladder (read-only: they change in config/ by review)."""
    overview = PolicyOverview()
    for pack_id, pack in sorted(book.files.items()):
        overview.packs.append((pack_id, pack.parent, pack.description))
        for w in pack.windows:
            overview.rules.append(
                PolicyRule(
                    pack_id,
                    "window",
                    w.id,
                    tuple(c.value for c in w.channels),
                    f"{', '.join(w.days)} {w.start:%H:%M}-{w.end:%H:%M} local",
                    w.source,
                )
            )
        for h in pack.holidays:
            overview.rules.append(
                PolicyRule(
                    pack_id,
                    "holiday",
                    h.id,
                    tuple(c.value for c in h.channels),
                    f"no contact on {h.calendar} holidays",
                    h.source,
                )
            )
        for c in pack.caps:
            span = f"{c.days:g} days" if c.days else f"{c.hours:g} hours"
            overview.rules.append(
                PolicyRule(
                    pack_id,
                    "cap",
                    c.id,
                    tuple(ch.value for ch in c.channels),
                    f"at most {c.limit} per {c.scope.value} in any {span}",
                    c.source,
                )
            )
        if pack.help is not None:
            overview.rules.append(
                PolicyRule(
                    pack_id, "help", pack.help.id, ("sms",), pack.help.text, pack.help.source
                )
            )
    for rule in RULES:
        overview.rules.append(
            PolicyRule("all", "hold", rule.id, (), f"hold: {rule.reason.value}", rule.source)
        )
    for approval in (FOUR_EYES, LINT_CLEAN, LIFECYCLE):
        overview.rules.append(PolicyRule("all", "approval", approval.id, (), "", approval.source))
    for stage in strategy.stages:
        steps = [(s.id, stage.step_dpd(s), s.channel.value, s.template) for s in stage.steps]
        overview.stages.append(
            (stage.id, f"{stage.dpd_from}..{'' if stage.dpd_to is None else stage.dpd_to}", steps)
        )
    return overview
