"""The exception hierarchy of dispatcher.

Every error we raise on purpose derives from :class:`DispatcherError`, so callers at the
edge (CLI, web, scheduler) can catch one type and turn it into a clear message:

    DispatcherError
    ├── ConfigError            a config file is missing, unparsable or invalid (exit 2)
    ├── InputError             a command-line value or input file is unusable (exit 2)
    ├── TemplateError          a template is missing, unparsable or fails to render
    ├── StoreError             the database cannot be reached or is not initialised
    └── DeliveryError          a channel could not deliver a message
        ├── TransientDelivery  worth retrying later (timeouts, 4xx SMTP, rate limits)
        ├── PermanentDelivery  retrying cannot help (invalid number, 5xx recipient)
        └── UncertainDelivery  the provider may or may not have taken it: never retried
                               blindly, reconciled (looked up) or left for a person
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Base class of every error dispatcher raises on purpose."""


class ConfigError(DispatcherError):
    """A configuration file is invalid; names the file, the key and what is wrong."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class InputError(DispatcherError):
    """A command-line value or an input file cannot be used as given."""


class TemplateError(DispatcherError):
    """A template is missing, cannot be parsed or fails to render."""


class StoreError(DispatcherError):
    """The database is unreachable or not initialised."""


class DeliveryError(DispatcherError):
    """A channel failed to deliver a message.

    ``code`` is the provider's own error code (Twilio error, SMTP reply code) when known,
    kept so people can see why a message failed.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)

    # The hold this answer calls for beyond failing the message (an opt-out, an invalid
    # number or mailbox), as a hold reason value; set by PermanentDelivery only.
    hold: str | None = None


class TransientDelivery(DeliveryError):
    """Delivery failed for a reason that may pass; the retry policy decides what next."""


class PermanentDelivery(DeliveryError):
    """Delivery failed for a reason retrying cannot fix; the message is marked failed.

    ``hold`` (a :class:`~dispatcher.domain.policy.HoldReason` value) says that the answer
    is also about the recipient, not only this message: the provider said the number
    opted out (``opted_out_sms``) or cannot receive SMS (``invalid_phone``), or the
    mailbox does not exist (``invalid_email``). The sender then places that hold on every
    account with the same phone or address, so later messages are held, not sent again
    to the provider. Adapters set it; the sender stays provider-agnostic.
    """

    def __init__(self, message: str, *, code: str | None = None, hold: str | None = None) -> None:
        super().__init__(message, code=code)
        self.hold = hold


class UncertainDelivery(DeliveryError):
    """The request may have reached the provider, but no answer came back (a read timeout,
    a connection lost after the message was sent): it may be delivered or not.

    Never retried blindly (the customer could get it twice). The sender leaves a message
    of a channel that can look messages up at the provider ``sending``, to be reconciled
    after the lease; for any other channel the message becomes ``unknown`` for a person.
    """
