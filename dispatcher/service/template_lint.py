"""Template lint: what compliance must fix before a template may reach a customer.

:func:`lint` checks a loaded :class:`~dispatcher.template.TemplateSet` against the
strategy and the policy packs; :func:`lint_directory` also loads it, turning a load
error (syntax error, unknown variable, bad front matter) into a finding. Each
:class:`Finding` names the file (and line when known), a rule id and a severity;
``dispatcher templates lint`` exits 1 when any finding is an error. The rules:

==================================  ========  ===============================================
rule                                severity  what it means
==================================  ========  ===============================================
``lint.load``                       error     the templates do not load (syntax, front matter)
``lint.unknown_variable``           error     a template uses a variable templates do not get
``lint.missing_template``           error     a strategy step has no template for a locale
``lint.render``                     error     rendering the sample data fails (file:line)
``lint.disclosure.<name>``          error     a disclosure the packs require is not declared
                                              in front matter, or is not in the rendered text
``lint.disclosure.unknown``         warning   front matter names a disclosure lint cannot check
``lint.sms_segments``               error     an SMS renders to more segments than allowed
``lint.sms_encoding``               warning   a Latin-script SMS needs UCS-2 (e.g. a curly quote)
``lint.approval``                   warning   the strategy uses a draft template
``lint.unused_template``            warning   no strategy step uses the template
==================================  ========  ===============================================

Why render sample data: a disclosure declared in front matter but deleted from the
wording, or an SMS that only overflows once a realistic name and amount are filled in,
is invisible to a check of the source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from markupsafe import escape

from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.error import TemplateError
from dispatcher.policy_book import PolicyBook
from dispatcher.sms import DEFAULT_MAX_SMS_SEGMENTS, analyse
from dispatcher.template import (
    CHANNEL_DIRS,
    Approval,
    RenderedMessage,
    TemplateInfo,
    TemplateSet,
)
from dispatcher.template.context import Creditor
from dispatcher.template.escape import typst_escape
from dispatcher.template.sample import SAMPLE_CREDITOR, sample_context


class Severity(StrEnum):
    """An error fails the lint (exit 1); a warning is shown and does not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one template file (``line`` None when no line applies)."""

    file: str
    line: int | None
    rule: str
    severity: Severity
    message: str

    @property
    def location(self) -> str:
        """``file:line``, or just ``file``: what editors and CI annotations understand."""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def as_dict(self) -> dict[str, object]:
        """The finding as plain JSON-ready data."""
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
        }


CREDITOR_IDENTITY: Final = "creditor_identity"
OPT_OUT: Final = "opt_out"
DEBT_COLLECTOR: Final = "debt_collector"
KNOWN_DISCLOSURES: Final = frozenset({CREDITOR_IDENTITY, OPT_OUT, DEBT_COLLECTOR})

BASELINE_DISCLOSURES: Final[Mapping[ChannelKind, frozenset[str]]] = {
    kind: frozenset({CREDITOR_IDENTITY}) for kind in ChannelKind
}
"""Every pack: each message says who it is from."""

PACK_DISCLOSURES: Final[Mapping[str, Mapping[ChannelKind, frozenset[str]]]] = {
    "US": {
        ChannelKind.SMS: frozenset({CREDITOR_IDENTITY, OPT_OUT}),
        ChannelKind.EMAIL: frozenset({CREDITOR_IDENTITY, OPT_OUT}),
        ChannelKind.LETTER: frozenset({CREDITOR_IDENTITY, DEBT_COLLECTOR}),
    },
}
"""Disclosures a pack (and every pack naming it as an ancestor) requires, per channel.

US: Reg F 12 CFR 1006.6(e) (a reasonable, simple opt-out in electronic messages) and
FDCPA §807(11), 15 U.S.C. §1692e(11) (the debt-collector disclosure, in every letter).
"""

DEBT_COLLECTOR_TEXTS: Final[Mapping[str, tuple[str, ...]]] = {
    "en": (
        "This is a communication from a debt collector. This is an attempt to collect a "
        "debt and any information obtained will be used for that purpose.",
    ),
    "zh": (
        "本函由债务催收方发出，旨在催收债务，所获取的任何信息均将仅用于该目的。",
        "本邮件由债务催收方发出，旨在催收债务，所获取的任何信息均将仅用于该目的。",
    ),
}
"""The approved debt-collector wording per language (see docs/TEMPLATES.md, Letters)."""

_ERROR_WHERE: Final = re.compile(
    r"^(?P<file>.+?\.j2(?:#subject)?)(?::(?P<line>\d+))?: (?P<message>.*)$", re.DOTALL
)
_SPACE: Final = re.compile(r"\s+")
_LATIN_LANGUAGES: Final = frozenset({"en", "fr", "de", "es", "it", "pt", "nl"})


def required_disclosures(book: PolicyBook) -> dict[ChannelKind, frozenset[str]]:
    """The disclosures each channel needs under the strictest pack in ``book``.

    Why the union over packs: a template is chosen by step and locale, not by
    jurisdiction, so one wording reaches accounts under every pack.
    """
    required = {kind: set(names) for kind, names in BASELINE_DISCLOSURES.items()}
    for pack_id in book.files:
        for pack in book.chain(pack_id):
            for kind, names in PACK_DISCLOSURES.get(pack.id, {}).items():
                required[kind] |= names
    return {kind: frozenset(names) for kind, names in required.items()}


def max_sms_segments(book: PolicyBook) -> int:
    """The strictest ``max_sms_segments`` of any pack, or the default of 3."""
    limits = [f.max_sms_segments for f in book.files.values() if f.max_sms_segments is not None]
    return min(limits, default=DEFAULT_MAX_SMS_SEGMENTS)


def locales_in_use(strategy: Strategy, templates: TemplateSet | None) -> list[str]:
    """The strategy's default locale and every locale some template is written in."""
    found = {strategy.default_locale}
    if templates is not None:
        found |= {locale for _channel, _name, locale in templates.names()}
    return sorted(found)


def finding_from_error(
    exc: TemplateError, *, rule: str = "lint.render", fallback_file: str = ""
) -> Finding:
    """A TemplateError (``file[:line]: message``) as an error finding."""
    text = str(exc)
    match = _ERROR_WHERE.match(text)
    if match is None:
        return Finding(fallback_file, None, rule, Severity.ERROR, text)
    line = match["line"]
    return Finding(
        match["file"], int(line) if line else None, rule, Severity.ERROR, match["message"]
    )


def lint_directory(
    root: Path,
    strategy: Strategy,
    book: PolicyBook,
    locales: Iterable[str] | None = None,
    *,
    creditor: Creditor = SAMPLE_CREDITOR,
) -> tuple[TemplateSet | None, list[Finding]]:
    """Load the templates under ``root`` and lint them; a load error is a finding.

    ``locales`` None means :func:`locales_in_use`. Returns the loaded set (None when
    it does not load) so callers can list or preview without loading twice.
    """
    try:
        templates = TemplateSet.load(root)
    except TemplateError as exc:
        rule = "lint.unknown_variable" if "unknown variable" in str(exc) else "lint.load"
        return None, [finding_from_error(exc, rule=rule, fallback_file=str(root))]
    chosen = locales_in_use(strategy, templates) if locales is None else locales
    return templates, lint(templates, strategy, book, chosen, creditor=creditor)


def lint(
    templates: TemplateSet,
    strategy: Strategy,
    book: PolicyBook,
    locales: Iterable[str],
    *,
    creditor: Creditor = SAMPLE_CREDITOR,
) -> list[Finding]:
    """Every finding for ``templates``, sorted by file, line and rule.

    Checks that each strategy step has a template in each of ``locales``; that each
    template declares, and with sample data actually renders, the disclosures the packs
    in ``book`` require for its channel; that the sample data renders at all; and that
    an SMS stays within the packs' segment limit. Pure apart from reading template files
    for line numbers.
    """
    findings: list[Finding] = []
    wanted = list(dict.fromkeys(locales))
    required = required_disclosures(book)
    limit = max_sms_segments(book)
    # (channel, template name) -> [(stage id, step DPD)], in ladder order.
    uses: dict[tuple[ChannelKind, str], list[tuple[str, int]]] = {}
    for stage in strategy.stages:
        for step in stage.steps:
            uses.setdefault((step.channel, step.template), []).append(
                (stage.id, stage.step_dpd(step))
            )
            for locale in wanted:
                if not templates.has(step.channel, step.template, locale):
                    findings.append(_missing(templates.root, step.channel, step.template, locale))
    for channel, name, locale in templates.names():
        info = templates.info(channel, name, locale)
        steps = uses.get((channel, name), [])
        findings += _check_template(info, templates, steps, required[channel], limit, creditor)
    unique = dict.fromkeys(findings)
    return sorted(unique, key=lambda f: (f.file, f.line or 0, f.rule, f.message))


def has_errors(findings: Iterable[Finding]) -> bool:
    """Whether any finding fails the lint."""
    return any(f.severity is Severity.ERROR for f in findings)


def _missing(root: Path, channel: ChannelKind, name: str, locale: str) -> Finding:
    part = {ChannelKind.SMS: "txt", ChannelKind.EMAIL: "txt", ChannelKind.LETTER: "typ"}[channel]
    path = root / CHANNEL_DIRS[channel] / f"{name}.{locale}.{part}.j2"
    also = f" (and {name}.{locale}.html.j2)" if channel is ChannelKind.EMAIL else ""
    return Finding(
        str(path),
        None,
        "lint.missing_template",
        Severity.ERROR,
        f"the strategy sends {channel} {name!r} but there is no {locale} template{also}",
    )


def _check_template(
    info: TemplateInfo,
    templates: TemplateSet,
    steps: list[tuple[str, int]],
    required: frozenset[str],
    limit: int,
    creditor: Creditor,
) -> list[Finding]:
    file = str(info.files[0])
    front = info.front_matter
    disclosures_line = _front_matter_line(info, "disclosures")
    findings: list[Finding] = []
    for name in sorted(required - set(front.disclosures)):
        findings.append(
            Finding(
                file,
                disclosures_line,
                f"lint.disclosure.{name}",
                Severity.ERROR,
                f"{info.channel} templates must carry the {name} disclosure; "
                "add it to front matter disclosures and to the wording",
            )
        )
    for name in front.disclosures:
        if name not in KNOWN_DISCLOSURES:
            findings.append(
                Finding(
                    file,
                    disclosures_line,
                    "lint.disclosure.unknown",
                    Severity.WARNING,
                    f"disclosure {name!r} is not one lint can check "
                    f"({', '.join(sorted(KNOWN_DISCLOSURES))})",
                )
            )
    if steps and front.approval is not Approval.APPROVED:
        findings.append(
            Finding(
                file,
                _front_matter_line(info, "approval"),
                "lint.approval",
                Severity.WARNING,
                f"the strategy uses this template but its approval is {front.approval}",
            )
        )
    if not steps:
        findings.append(
            Finding(
                file,
                None,
                "lint.unused_template",
                Severity.WARNING,
                f"no step of the strategy sends {info.channel} {info.name!r}",
            )
        )
    checked = (set(front.disclosures) | required) & KNOWN_DISCLOSURES
    for stage_id, dpd in steps or [("early", 7)]:
        context = sample_context(info.locale, dpd=dpd, stage_id=stage_id, creditor=creditor)
        try:
            message = templates.render(info.channel, info.name, info.locale, context)
        except TemplateError as exc:
            findings.append(finding_from_error(exc, fallback_file=file))
            continue
        where = f"with sample data at {dpd} days past due ({stage_id})"
        for name in sorted(checked):
            problem = _absent(name, info, message, context, creditor)
            if problem is not None:
                findings.append(
                    Finding(
                        problem[0],
                        disclosures_line if problem[0] == file else None,
                        f"lint.disclosure.{name}",
                        Severity.ERROR,
                        f"{problem[1]} {where}",
                    )
                )
        if info.channel is ChannelKind.SMS:
            findings += _check_sms(file, info.locale, message.body, limit, where)
    return findings


def _absent(
    name: str,
    info: TemplateInfo,
    message: RenderedMessage,
    context: Mapping[str, object],
    creditor: Creditor,
) -> tuple[str, str] | None:
    """(file, problem) when disclosure ``name`` is missing from a rendered part, else None."""
    text_file = str(info.files[0])
    parts: list[tuple[str, str, str]] = []  # (file, kind, rendered text)
    kind = "typst" if info.channel is ChannelKind.LETTER else "text"
    parts.append((text_file, kind, message.body))
    if message.body_html is not None and len(info.files) > 1:
        parts.append((str(info.files[1]), "html", message.body_html))
    for file, part_kind, text in parts:
        if name == CREDITOR_IDENTITY:
            if not _contains(text, part_kind, creditor.name):
                return file, f"the creditor's name {creditor.name!r} is not in the text"
        elif name == OPT_OUT:
            if info.channel is ChannelKind.LETTER:
                return None
            value = context["unsubscribe_link" if info.channel is ChannelKind.EMAIL else "opt_out"]
            if not _contains(text, part_kind, str(value)):
                what = "unsubscribe link" if info.channel is ChannelKind.EMAIL else "opt-out line"
                return file, f"the {what} {value!r} is not in the text"
        elif name == DEBT_COLLECTOR:
            wordings = DEBT_COLLECTOR_TEXTS.get(_language(info.locale), ())
            if not wordings:
                return file, f"no approved debt-collector wording for {info.locale} to check"
            flat = _SPACE.sub(" ", text)
            if not any(_contains(flat, part_kind, w) for w in wordings):
                return file, f"the debt-collector disclosure {wordings[0]!r} is not in the text"
    return None


def _contains(text: str, kind: str, value: str) -> bool:
    """Whether ``value`` is in ``text`` as written, or as the part's escaping spells it."""
    if value in text:
        return True
    if kind == "html":
        return str(escape(value)) in text
    if kind == "typst":
        return typst_escape(value) in text
    return False


def _check_sms(file: str, locale: str, body: str, limit: int, where: str) -> list[Finding]:
    info = analyse(body)
    found: list[Finding] = []
    unit = "septets" if info.encoding == "GSM-7" else "UCS-2 units"
    if info.segments > limit:
        found.append(
            Finding(
                file,
                None,
                "lint.sms_segments",
                Severity.ERROR,
                f"renders as {info.segments} {info.encoding} segments ({info.units} {unit}) "
                f"{where}; the policy packs allow at most {limit}",
            )
        )
    if info.encoding == "UCS-2" and _language(locale) in _LATIN_LANGUAGES:
        chars = " ".join(f"{c!r} (U+{ord(c):04X})" for c in info.non_gsm[:5])
        found.append(
            Finding(
                file,
                None,
                "lint.sms_encoding",
                Severity.WARNING,
                f"needs UCS-2 (70/67 characters per segment) because of {chars} {where}",
            )
        )
    return found


def _language(locale: str) -> str:
    return locale.replace("_", "-").split("-")[0].lower()


def _front_matter_line(info: TemplateInfo, key: str) -> int | None:
    """The line of ``key = ...`` in the first file's front matter, for findings about it.

    Read from the source the template was loaded from (a catalog version may differ from
    the file on disk now), or from the file when that is not kept.
    """
    try:
        text = info.texts[0] if info.texts else info.files[0].read_text(encoding="utf-8")
    except OSError:
        return None
    lines = text.split("\n")
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(lines[1:], start=2):
        if line.rstrip() == "+++":
            break
        if pattern.match(line):
            return number
    return None
