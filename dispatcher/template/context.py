"""The render context: the fixed set of variables every template may use.

Templates see exactly :data:`VARIABLES`, built by :func:`build_context` from the account,
its days past due, the stage and the creditor. A fixed, documented set lets compliance
write templates without reading code, and lets :class:`~dispatcher.template.TemplateSet`
reject a misspelt variable when it loads, not when a message is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import quote

from dispatcher.domain.account import Account
from dispatcher.domain.staging import local_date
from dispatcher.memo import LastObjectMemo
from dispatcher.template.filter import canonical_locale

VARIABLES: Final[frozenset[str]] = frozenset(
    {
        "account_id",
        "customer_name",
        "first_name",
        "balance",
        "currency",
        "due_date",
        "dpd",
        "days_overdue",
        "days_until_due",
        "stage",
        "creditor",
        "payment_link",
        "opt_out",
        "unsubscribe_link",
        "address_lines",
        "country",
        "locale",
        "today",
    }
)
"""Every name :func:`build_context` provides, and the only names templates may use."""

_HONORIFICS: Final = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "sir",
        "dame",
        "rev",
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "prof.",
        "rev.",
    }
)


@dataclass(frozen=True)
class Creditor:
    """Who the messages come from: the identity every message must carry.

    ``payment_url`` and ``opt_out_email_url`` are ``str.format`` patterns with one field,
    ``{account_id}`` (URL-quoted when filled in). ``opt_out_sms`` is the SMS opt-out
    line; ``opt_out_sms_by_locale`` overrides it per BCP 47 locale, so a zh-CN message
    does not end in English. Its keyword must be one the SMS provider honours (Twilio
    handles STOP), hence the zh-CN default also says STOP.
    """

    name: str
    phone: str
    email: str
    website: str
    address_lines: tuple[str, ...]
    payment_url: str
    opt_out_email_url: str
    opt_out_sms: str = "Reply STOP to opt out."
    opt_out_sms_by_locale: tuple[tuple[str, str], ...] = (("zh-CN", "回复STOP退订"),)

    def __post_init__(self) -> None:
        for field_name in ("payment_url", "opt_out_email_url"):
            pattern = getattr(self, field_name)
            try:
                pattern.format(account_id="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"Creditor.{field_name} must be a format pattern with only "
                    f"{{account_id}}: {exc}"
                ) from exc

    def opt_out_sms_for(self, locale: str) -> str:
        """The SMS opt-out line in ``locale`` (any spelling of it), or the default one."""
        wanted = canonical_locale(locale)
        for tag, text in self.opt_out_sms_by_locale:
            if tag == locale or (wanted is not None and canonical_locale(tag) == wanted):
                return text
        return self.opt_out_sms


def first_name(full_name: str) -> str:
    """Best-effort given name for a salutation ("Hi Jane").

    Why best effort: names do not split reliably. "Doe, Jane" gives "Jane"; a leading
    honorific is skipped ("Dr. Jane Doe" gives "Jane"); a name without spaces (common
    for Chinese names, e.g. "王小明") is returned whole, since the family name comes
    first and the customer should not be addressed by it alone.
    """
    return _given_name(_one_line(full_name))


def _one_line(name: str) -> str:
    """``name`` with every run of whitespace one space, and none at the ends.

    The same as ``re.sub(r"\\s+", " ", name).strip()`` (``\\s`` is ``str.isspace``), in a
    third of the time; tests/unit/test_template_fast_path.py checks the two agree.
    """
    return " ".join(name.split())


def _given_name(name: str) -> str:
    if "," in name:
        _family, _, given = name.partition(",")
        name = given.strip() or _family.strip()
    parts = name.split(" ")
    while len(parts) > 1 and parts[0].lower() in _HONORIFICS:
        parts = parts[1:]
    return parts[0] if parts else ""


# The run's creditor's SMS opt-out line per locale spelling: a run has one creditor and a
# few locales, and the lookup canonicalises two tags per message.
_opt_outs: LastObjectMemo[str, str] = LastObjectMemo()


def _opt_out(creditor: Creditor, locale: str) -> str:
    """``creditor.opt_out_sms_for(locale)``, remembered for the run's (frozen) creditor."""
    line = _opt_outs.get(creditor, locale)
    if line is None:
        line = creditor.opt_out_sms_for(locale)
        _opt_outs.put(creditor, locale, line)
    return line


def build_context(
    account: Account, *, dpd: int, stage_id: str, creditor: Creditor, now: datetime
) -> dict[str, object]:
    """Build the render context of one message; pure, no I/O.

    Why here and not in each template: every channel and template sees the same, fixed
    variables with the same meaning (see :data:`VARIABLES` and docs/TEMPLATES.md), and
    ``today`` is the date in the customer's own time zone, as the contact rules are.
    """
    quoted = quote(account.account_id, safe="")
    customer_name = _one_line(account.full_name)
    return {
        "account_id": account.account_id,
        "customer_name": customer_name,
        "first_name": _given_name(customer_name),
        "balance": account.balance,
        "currency": account.currency,
        "due_date": account.due_date,
        "dpd": dpd,
        "days_overdue": max(dpd, 0),
        "days_until_due": max(-dpd, 0),
        "stage": stage_id,
        "creditor": creditor,
        "payment_link": creditor.payment_url.format(account_id=quoted),
        "opt_out": _opt_out(creditor, account.locale),
        "unsubscribe_link": creditor.opt_out_email_url.format(account_id=quoted),
        "address_lines": account.address.lines() if account.address is not None else [],
        # ISO 3166 alpha-2; letters choose their paper and envelope window by it.
        "country": account.country or "",
        "locale": account.locale,
        "today": local_date(now, account.timezone),
    }
