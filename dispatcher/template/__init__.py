"""Templates: load, check and render what compliance wrote; compile letters to PDF.

Public API::

    TemplateSet.load(root) -> TemplateSet
    TemplateSet.render(channel, name, locale, context) -> RenderedMessage
    build_context(account, dpd=..., stage_id=..., creditor=..., now=...) -> dict
    compile_pdf(typst_source, font_paths=()) -> bytes

See docs/TEMPLATES.md.
"""

from dispatcher.domain.strategy import ChannelKind
from dispatcher.template.context import VARIABLES, Creditor, build_context, first_name
from dispatcher.template.front_matter import Approval, FrontMatter
from dispatcher.template.letter import compile_pdf
from dispatcher.template.renderer import (
    CHANNEL_DIRS,
    RenderedMessage,
    TemplateInfo,
    TemplateSet,
    body_digest,
)

__all__ = [
    "CHANNEL_DIRS",
    "VARIABLES",
    "Approval",
    "ChannelKind",
    "Creditor",
    "FrontMatter",
    "RenderedMessage",
    "TemplateInfo",
    "TemplateSet",
    "body_digest",
    "build_context",
    "compile_pdf",
    "first_name",
]
