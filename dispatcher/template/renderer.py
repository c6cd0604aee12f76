"""Load, check and render the compliance-owned templates.

:class:`TemplateSet` loads every template under ``templates/`` once, validates its
front matter, compiles it in a sandboxed Jinja environment and caches the result, so
rendering ~100k messages per planning run costs microseconds each. See
docs/TEMPLATES.md for the file layout, front matter, variables, filters and escaping.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.meta import find_undeclared_variables
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import concat
from markupsafe import Markup, escape

# markupsafe's own escaping of an exact str, without wrapping the result in Markup; the
# import mirrors markupsafe's (C speedups, else its pure-Python twin).
try:
    from markupsafe._speedups import _escape_inner
except ImportError:  # pragma: no cover - markupsafe built without its C extension
    from markupsafe._native import _escape_inner

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError
from dispatcher.template.context import VARIABLES, Creditor
from dispatcher.template.escape import (
    html_value,
    normalise_text,
    single_line,
    strip_unsafe,
    text_value,
    typst_string,
    typst_value,
)
from dispatcher.template.filter import babel_locale, canonical_locale, make_filters
from dispatcher.template.front_matter import FrontMatter, split_front_matter

CHANNEL_DIRS: Final[Mapping[ChannelKind, str]] = {
    ChannelKind.SMS: "sms",
    ChannelKind.EMAIL: "email",
    ChannelKind.LETTER: "letters",
}
"""The directory under the templates root that holds each channel's files."""

_PARTS: Final[Mapping[ChannelKind, frozenset[str]]] = {
    ChannelKind.SMS: frozenset({"txt"}),
    ChannelKind.EMAIL: frozenset({"txt", "html"}),
    ChannelKind.LETTER: frozenset({"typ"}),
}
_FILE_NAME: Final = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)\.(?P<locale>[A-Za-z0-9-]+)\.(?P<part>[a-z]+)\.j2$"
)
# A Typst package import would make the offline print pipeline reach the network.
_PACKAGE_IMPORT: Final = re.compile(r"\b(?:import|include)\s+\"@")
_FORBIDDEN_NODES: Final = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)

Key = tuple[ChannelKind, str, str]

# Records of our own whose fields are plain data (strings, tuples of strings) that
# templates read by attribute, e.g. ``{{ creditor.name }}``.
_DATA_FIELDS: Final[Mapping[type, frozenset[str]]] = {
    Creditor: frozenset(field.name for field in fields(Creditor)),
}


class _SlotCode(CodeGenerator):
    """Jinja's code generator, writing each ``{{ value }}`` as one call of the environment.

    Why: Jinja writes ``escape(environment.finalize(value))`` (HTML) or
    ``str(environment.finalize(value))`` (text, Typst) for every interpolated value; in
    HTML that is three Python calls and a ``Markup`` object per value, and per value is
    where an email's time goes (docs/BENCHMARKS.md). This writes
    ``environment.escaped_slot(value)`` or ``environment.plain_slot(value)`` instead:
    :class:`_Sandbox` defines them to give exactly the text of Jinja's own expression
    (tests/unit/test_template_fast_path.py). Constants, the sandbox's checks on attribute
    reads and calls, and ``{% autoescape %}`` blocks decided at run time are Jinja's own.
    """

    def write_commons(self) -> None:
        """Jinja's preamble of the root and block functions, and the two slot functions.

        Bound once per render as locals, as Jinja binds ``resolve`` and ``concat``; the
        functions a template defines inside them (macros, loops, call blocks) see them too.
        """
        super().write_commons()
        self.writeline("escaped_slot = environment.escaped_slot")
        self.writeline("plain_slot = environment.plain_slot")

    def _output_child_pre(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        if frame.eval_ctx.volatile or finalize.src != "environment.finalize(":
            super()._output_child_pre(node, frame, finalize)
        elif frame.eval_ctx.autoescape:
            self.write("escaped_slot(")
        else:
            self.write("plain_slot(")

    def _output_child_post(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        if frame.eval_ctx.volatile or finalize.src != "environment.finalize(":
            super()._output_child_post(node, frame, finalize)
        else:
            self.write(")")

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        """Yield one joined string per run of output, not one per piece.

        Why: Jinja yields every constant and every value separately, and resuming the
        generator for each of an email's ~70 pieces costs more than joining them. The
        pieces, their order and Jinja's folding of constants are the same (this is
        Jinja's own loop, less its buffered and ``extends`` cases, which stay Jinja's);
        each value keeps its own line, so errors still name the template's line.
        """
        if frame.buffer is not None or frame.require_output_check:
            super().visit_Output(node, frame)
            return
        finalize = self._make_finalize()
        body: list[list[Any] | nodes.Expr] = []
        for child in node.nodes:
            try:
                if not (finalize.const or isinstance(child, nodes.TemplateData)):
                    raise nodes.Impossible()
                const = self._output_child_to_const(child, frame, finalize)
            except (nodes.Impossible, Exception):
                body.append(child)
                continue
            if body and isinstance(body[-1], list):
                body[-1].append(const)
            else:
                body.append([const])
        if len(body) < 2:
            super().visit_Output(node, frame)
            return
        self.writeline("output_pieces = (")
        self.indent()
        for item in body:
            if isinstance(item, list):
                self.writeline(self._output_const_repr(item) + ",")
            else:
                self.newline(item)
                self._output_child_pre(item, frame, finalize)
                self.visit(item, frame)
                self._output_child_post(item, frame, finalize)
                self.write(",")
        self.outdent()
        self.writeline(")")
        if frame.eval_ctx.autoescape and not frame.eval_ctx.volatile:
            # The pieces, and the JSON of each constant one, for the digest (_json_pieces).
            consts = tuple(
                _json_content(concat(item)) if isinstance(item, list) else None for item in body
            )
            self.writeline(f"context.json_pieces = (output_pieces, {consts!r})")
        self.writeline("yield concat(output_pieces)")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with fast paths for our own records' fields and for output.

    Why: the generic path checks every attribute read for internal names, unsafe
    callables and mutating methods; on a field declared in a frozen dataclass of ours
    (:data:`_DATA_FIELDS`) those checks can only pass, and they were a quarter of an
    email's render time. Anything else, including the records' methods, takes the
    generic, checked path. Output goes through :meth:`plain_slot` and
    :meth:`escaped_slot` (see :class:`_SlotCode`).
    """

    code_generator_class = _SlotCode

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Both remove unsafe characters from an exact str and do nothing else to it.
        self._strips = self.finalize in (text_value, html_value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        entry = _FIELD_CACHE.get(id(obj))
        if entry is not None and entry[0] is obj:
            values = entry[1]  # only the data fields of a record in _DATA_FIELDS
            if attribute in values:
                return values[attribute]
        names = _DATA_FIELDS.get(type(obj))
        if names is not None and attribute in names:
            return _record_fields(obj)[attribute]
        return super().getattr(obj, attribute)

    def plain_slot(self, value: Any) -> str:
        """``{{ value }}`` outside autoescape: the text of ``str(finalize(value))``."""
        if self._strips:
            cls = type(value)
            if cls is str or cls is _Text:
                return value if value.isprintable() else strip_unsafe(value)
            if cls is int:
                return str(value)  # digits and a sign: nothing to remove
        finalize: Callable[[Any], Any] = self.finalize  # type: ignore[assignment]
        return str(finalize(value))

    def escaped_slot(self, value: Any) -> str:
        """``{{ value }}`` under autoescape: the text of ``escape(finalize(value))``.

        A str, not Markup: the part is joined into a str anyway, and a buffer (a
        ``{% set %}`` block, a macro) is joined and marked safe by Jinja as a whole.
        """
        if self._strips:
            cls = type(value)
            if cls is str:
                return _escape_inner(value if value.isprintable() else strip_unsafe(value))
            if cls is _Text:
                return value.__html__()  # type: ignore[no-any-return]
            if cls is int:
                return str(value)  # digits and a sign: nothing to remove or escape
            if cls is Markup and self.finalize is html_value:
                return value  # type: ignore[no-any-return]  # safe already: kept as it is
        finalize: Callable[[Any], Any] = self.finalize  # type: ignore[assignment]
        return escape(finalize(value))


class _Text(str):
    """A record's text field that remembers its escaped HTML form.

    Why: the creditor's name, phone and address appear in every message of a run;
    escaping them anew each time was a tenth of an email's render. It is still the very
    same text (filters see the raw value), and ``__html__`` is exactly what autoescape
    makes of it: :func:`html_value`, then markupsafe's escape.
    """

    __slots__ = ("_html",)
    _html: Markup

    def __html__(self) -> Markup:
        try:
            return self._html
        except AttributeError:
            self._html = escape(html_value(str(self)))
            return self._html


_NOTHING: Final = object()


def _remembering_join(join: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's ``join`` filter, remembering its last answer for a record's text tuple.

    Why: ``{{ creditor.address_lines|join(", ") }}`` joins the very same tuple in every
    message of a run (the creditor's fields are cached, see :func:`_record_fields`), and
    Jinja's filter costs a microsecond or two per call. Only a tuple of the records' own
    texts is remembered (immutable, so the same objects give the same answer), and a hit
    needs the same tuple, separator object and autoescape; everything else is Jinja's.
    """
    last: list[tuple[object, object, object, object]] = [(_NOTHING, None, None, None)]

    @pass_eval_context
    def remembering(
        eval_ctx: EvalContext, value: Any, d: str = "", attribute: str | int | None = None
    ) -> Any:
        seen = last[0]
        if (
            value is seen[0]
            and d is seen[1]
            and eval_ctx.autoescape is seen[2]
            and attribute is None
        ):
            return seen[3]
        result = join(eval_ctx, value, d, attribute)
        if (
            attribute is None
            and type(value) is tuple
            and all(type(item) is _Text for item in value)
        ):
            last[0] = (value, d, eval_ctx.autoescape, result)
        return result

    return remembering


# id(record) -> (record, field -> value). The record itself is kept, so its id cannot
# be reused by another object while the entry lives; few records (one creditor) exist.
_FIELD_CACHE: dict[int, tuple[object, dict[str, object]]] = {}


def _record_fields(obj: object) -> dict[str, object]:
    entry = _FIELD_CACHE.get(id(obj))
    if entry is not None and entry[0] is obj:
        return entry[1]
    values: dict[str, object] = {}
    for name in _DATA_FIELDS[type(obj)]:
        value = getattr(obj, name)
        if type(value) is str:
            value = _Text(value)
        elif type(value) is tuple and all(type(item) is str for item in value):
            value = tuple(_Text(item) for item in value)
        values[name] = value
    if len(_FIELD_CACHE) >= 64:  # bounded: records come from settings, a handful per run
        _FIELD_CACHE.clear()
    _FIELD_CACHE[id(obj)] = (obj, values)
    return values


_CREDITOR_FIELDS: Final = _DATA_FIELDS[Creditor]


def _creditor_field(node: nodes.Node) -> bool:
    """Whether ``node`` is ``creditor.<data field>``, read (not assigned)."""
    return (
        type(node) is nodes.Getattr
        and node.ctx == "load"
        and node.attr in _CREDITOR_FIELDS
        and type(node.node) is nodes.Name
        and node.node.name == "creditor"
        and node.node.ctx == "load"
    )


def _creditor_value(node: nodes.Node) -> bool:
    """Whether ``node`` is ``creditor.<field>`` or ``creditor.<field>|join(<text>)``."""
    if type(node) is nodes.Filter:
        return (
            node.name == "join"
            and node.node is not None
            and _creditor_field(node.node)
            and len(node.args) <= 1
            and all(type(arg) is nodes.Const and type(arg.value) is str for arg in node.args)
            and not node.kwargs
            and node.dyn_args is None
            and node.dyn_kwargs is None
        )
    return _creditor_field(node)


def _creditor_values(tree: nodes.Template) -> list[tuple[nodes.Output, int]]:
    """The ``{{ value }}`` slots of ``tree`` whose text only the creditor decides.

    Each is (its Output node, its index there). Only the template's own top-level output
    counts: there the autoescape setting is the environment's, fixed when it is compiled,
    and nothing is buffered. None at all if the template could give ``creditor`` another
    meaning (``{% set %}``, a loop or macro variable, ``{% with %}``) or changes the
    evaluation context outside a scope; the slot's text is then not the record's.
    """
    for name in tree.find_all(nodes.Name):
        if name.name == "creditor" and name.ctx != "load":
            return []
    for modifier in tree.find_all(nodes.EvalContextModifier):
        if type(modifier) is nodes.EvalContextModifier:
            return []
    return [
        (output, index)
        for output in tree.body
        if type(output) is nodes.Output
        for index, child in enumerate(output.nodes)
        if _creditor_value(child)
    ]


class _CreditorTemplates:
    """One part's template with the creditor's values written in as text, per creditor.

    Why: an email prints the creditor's name, phone, address and web site about ten times
    a part, and they are the same in every message of a run (one creditor, from settings).
    Each is a sandboxed attribute read, a slot call (escaping in HTML) and, for the
    address, a join: about a quarter of a part's render (docs/BENCHMARKS.md). Here each such slot
    (:func:`_creditor_values`) is rendered once per creditor by the very environment and
    code that would render it in place (a template of just those slots), and the part is
    compiled again with that text as template data, which Jinja joins with the constant
    text around it. The creditor is a frozen record (its fields are strings and tuples of
    strings), so its identity stands for its values; the one kept is referenced here, so
    its id cannot pass to another object. Anything that fails (a field that does not read
    as text, say) leaves the part to its generic template, which raises as before.
    """

    _BOUND: Final = 8  # creditors per part: settings name one, tests a few

    def __init__(
        self, env: _Sandbox, source: str, file: str, globals_: MutableMapping[str, Any]
    ) -> None:
        self._env = env
        self._source = source
        self._file = file
        self._globals = globals_
        self._last: tuple[object, Template | None] = (_NOTHING, None)
        self._seen: dict[int, tuple[Creditor, Template | None]] = {}

    def template(self, creditor: Creditor) -> Template | None:
        """The part's template for ``creditor``, or None where the generic one must run."""
        last = self._last
        if last[0] is creditor:
            return last[1]
        entry = self._seen.get(id(creditor))
        if entry is None or entry[0] is not creditor:
            if len(self._seen) >= self._BOUND:
                self._seen.clear()
            entry = (creditor, self._written_in(creditor))
            self._seen[id(creditor)] = entry
        self._last = entry
        return entry[1]

    def _written_in(self, creditor: Creditor) -> Template | None:
        env, file = self._env, self._file
        try:
            # A fresh tree: compiling one may change it (Jinja's optimizer works in place).
            tree = env.parse(self._source, name=file, filename=file)
            slots = _creditor_values(tree)
            values = nodes.Template(
                [nodes.Output([output.nodes[index]], lineno=1) for output, index in slots],
                lineno=1,
            )
            values.set_environment(env)
            code = env.compile(values, name=file, filename=file)
            renderer = env.template_class.from_code(env, code, self._globals)
            context = renderer.new_context({"creditor": creditor}, shared=True)
            texts = list(renderer.root_render_func(context))
            if len(texts) != len(slots) or not all(isinstance(text, str) for text in texts):
                return None
            for (output, index), text in zip(slots, texts, strict=True):
                # str(): the characters, as the part's own join takes them (Markup or not).
                data = nodes.TemplateData(str(text), lineno=output.nodes[index].lineno)
                data.set_environment(env)
                output.nodes[index] = data
            code = env.compile(tree, name=file, filename=file)
            return env.template_class.from_code(env, code, self._globals)
        except Exception:
            return None


@dataclass(frozen=True)
class RenderedMessage:
    """One rendered message, with what the audit log needs to prove what was sent.

    ``body_sha256`` is the SHA-256 (hex) of the UTF-8 bytes of the JSON array
    ``[subject, body, body_html]`` written with ``ensure_ascii=False`` and separators
    ``(",", ":")``, absent parts as ``null``; see :func:`body_digest`.
    """

    template_id: str
    template_version: str
    template_sha256: str
    subject: str | None
    body: str
    body_html: str | None
    body_sha256: str


@dataclass(frozen=True)
class TemplateInfo:
    """What is known about one loaded template without rendering it (for lint, preview)."""

    channel: ChannelKind
    name: str
    locale: str
    front_matter: FrontMatter
    files: tuple[Path, ...]
    sha256: str
    texts: tuple[str, ...] = ()
    """The source of each file, as loaded (what ``sha256`` covers), for the version catalog."""


@dataclass(frozen=True)
class _Part:
    file: str
    template: Template
    finish: Callable[[str], str]
    globals: Mapping[str, object] | None = None
    """Jinja's globals when the template names one of them, else None (see _run)."""
    by_creditor: _CreditorTemplates | None = None
    """The template with its creditor's values written in, if it has any (see _run)."""
    flat: bool = False
    """Whether the template is one run of output and nothing else (see _run)."""


@dataclass(frozen=True)
class _Source:
    """One compiled file, and Jinja's globals if it names one (else None)."""

    template: Template
    globals: Mapping[str, object] | None
    by_creditor: _CreditorTemplates | None = None
    flat: bool = False


@dataclass(frozen=True)
class _Compiled:
    info: TemplateInfo
    body: _Part
    html: _Part | None
    subject: _Part | None


def body_digest(subject: str | None, body: str, body_html: str | None) -> str:
    """SHA-256 hex of a message's content in its canonical form (see RenderedMessage).

    Why JSON: it is unambiguous (no separator can be forged by content, ``null`` differs
    from an empty string) and any auditor's tool can recompute it.
    """
    return _digest(subject, body, body_html, None)


def _digest(subject: str | None, body: str, body_html: str | None, html_json: bytes | None) -> str:
    """:func:`body_digest`, with ``html_json`` the JSON of ``body_html`` if already known."""
    # What json.dumps([subject, body, body_html], ensure_ascii=False,
    # separators=(",", ":")) writes, in UTF-8, without building an encoder per message.
    # Fed piece by piece: the same bytes as one joined string, without copying them.
    digest = hashlib.sha256(b"[")
    digest.update(_json_bytes(subject))
    digest.update(b",")
    digest.update(_json_bytes(body))
    digest.update(b",")
    digest.update(html_json if html_json is not None else _json_bytes(body_html))
    digest.update(b"]")
    return digest.hexdigest()


def _json_content(text: str) -> bytes:
    """What JSON writes between the quotes of ``text`` (``ensure_ascii=False``), in UTF-8."""
    return str(encode_basestring(text))[1:-1].encode("utf-8")


def _json_pieces(pieces: tuple[str, ...], consts: tuple[bytes | None, ...]) -> bytes:
    """``"".join(pieces)`` as a JSON string in UTF-8, from the JSON of its constant pieces.

    Why: an HTML part is ~3 KB of the template's own text around ~10 short values. JSON
    escapes character by character, and UTF-8 encodes character by character, so the
    JSON of the whole is the JSON of its pieces one after the other; the constant pieces'
    JSON is written when the template is compiled (``consts``, None for a value), and
    only the values are escaped per message, by json's own ``encode_basestring``.
    """
    # strict: the two tuples are written side by side by the same loop (_SlotCode).
    json = [c if c is not None else _json_content(p) for p, c in zip(pieces, consts, strict=True)]
    return b"".join([b'"', *json, b'"'])


# Every byte JSON writes as an escape except the newline: the other control characters.
_JSON_CONTROLS: Final = bytes(range(0x20)).replace(b"\n", b"")


def _json_bytes(text: str | None) -> bytes:
    """``text`` as a JSON string (``ensure_ascii=False``), in UTF-8.

    Why in bytes: a message is a few KB of mostly template text with many quotes and
    newlines, and ``encode_basestring`` takes it a character at a time. In UTF-8 no byte
    of a multi-byte character is below 0x80, so JSON's escapes (quote, backslash, control
    characters) can be made on the bytes; the newline, the one control character common in
    messages, by ``bytes.replace``; text with any other (rare) takes ``encode_basestring``.
    """
    if text is None:
        return b"null"
    data = text.encode("utf-8")
    if len(data.translate(None, _JSON_CONTROLS)) != len(data):
        return str(encode_basestring(text)).encode("utf-8")
    return b"".join(
        (
            b'"',
            data.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n"),
            b'"',
        )
    )


def _strip_edges(text: str) -> str:
    """The text without blank space at either end, and ending in one newline.

    An HTML part or a letter normally starts with its markup and ends in a single
    newline after it; then that is the text itself, and two copies of it are saved.
    """
    if len(text) > 1 and text[-1] == "\n" and not text[-2].isspace() and not text[0].isspace():
        return text
    return text.strip() + "\n"


class TemplateSet:
    """Every template under one root, compiled once and rendered many times."""

    def __init__(self, root: Path, compiled: Mapping[Key, _Compiled]) -> None:
        """Use :meth:`load`; this only stores what it compiled."""
        self.root = root
        self._compiled: dict[Key, _Compiled] = dict(compiled)
        by_canonical: dict[str, str] = {}
        for _channel, _name, locale in sorted(self._compiled):
            by_canonical.setdefault(canonical_locale(locale) or locale, locale)
        self._by_canonical = by_canonical
        # Exact spellings map to themselves; other spellings are resolved on first use.
        self._locale_of: dict[str, str | None] = {key[2]: key[2] for key in self._compiled}

    @classmethod
    def load(cls, root: Path, *, variables: Collection[str] = VARIABLES) -> TemplateSet:
        """Load, validate and compile every template under ``root`` (the templates/ dir).

        Why all at once: a broken template must stop a deployment, not fail at 3 a.m.
        when its step comes due. Checks the file name, the front matter (and that it
        agrees with the file name), Jinja syntax, that only ``variables`` (the fixed set
        of :func:`~dispatcher.template.build_context`) are used, and that no template
        includes another (the hash on each message covers exactly its own files).
        Raises TemplateError naming the file, and the line when known.
        """
        if not root.is_dir():
            raise TemplateError(f"{root}: template directory does not exist")
        loader = _Loader(root, frozenset(variables))
        for channel, directory in CHANNEL_DIRS.items():
            folder = root / directory
            if folder.is_dir():
                for path in sorted(folder.glob("*.j2")):
                    loader.add(channel, path)
        return cls(root, loader.finish())

    @classmethod
    def from_sources(
        cls,
        root: Path,
        sources: Iterable[tuple[ChannelKind, Path, bytes]],
        *,
        variables: Collection[str] = VARIABLES,
    ) -> TemplateSet:
        """Like :meth:`load`, from file contents kept elsewhere (the version catalog).

        Why: the planner sends the *approved* wording, which the database keeps, not
        whatever the file on disk says now. Each source is (channel, the file's path under
        ``root`` (its name and the label in errors), its bytes); the same checks apply.
        """
        loader = _Loader(root, frozenset(variables))
        for channel, path, data in sources:
            loader.add(channel, path, data)
        return cls(root, loader.finish())

    def has(self, channel: ChannelKind, name: str, locale: str) -> bool:
        """Whether a template exists, so callers can fall back or hold before rendering."""
        file_locale = self._file_locale(locale)
        return file_locale is not None and (channel, name, file_locale) in self._compiled

    def names(self) -> list[tuple[ChannelKind, str, str]]:
        """Every loaded template as (channel, name, locale), sorted."""
        return sorted(self._compiled)

    def info(self, channel: ChannelKind, name: str, locale: str) -> TemplateInfo:
        """Front matter, files and hash of one template, for lint and preview tooling."""
        return self._get(channel, name, locale).info

    def render(
        self, channel: ChannelKind, name: str, locale: str, context: Mapping[str, object]
    ) -> RenderedMessage:
        """Render one message from ``context`` (normally from ``build_context``).

        Raises TemplateError naming the file (and line) when the template is missing,
        a variable is undefined, the sandbox refuses an operation or a filter fails.
        """
        compiled = self._get(channel, name, locale)
        variables = context if isinstance(context, dict) else dict(context)
        creditor = variables.get("creditor")
        if type(creditor) is not Creditor:
            creditor = None  # no record of ours: every part runs its generic template
        subject = html = html_json = None
        if compiled.subject is not None:
            subject = _run(compiled.subject, variables, creditor)[0]
        body = _run(compiled.body, variables, creditor)[0]
        if compiled.html is not None:
            html, html_json = _run(compiled.html, variables, creditor)
        if subject is not None and not subject:
            raise TemplateError(f"{compiled.body.file}: subject renders empty")
        info = compiled.info
        return RenderedMessage(
            template_id=info.front_matter.id,
            template_version=info.front_matter.version,
            template_sha256=info.sha256,
            subject=subject,
            body=body,
            body_html=html,
            body_sha256=_digest(subject, body, html, html_json),
        )

    def _file_locale(self, locale: str) -> str | None:
        """The locale of the template files for ``locale``: ``zh-Hans-CN`` finds ``zh-CN``.

        Why: BCP 47 has several spellings of one locale (babel writes ``zh_Hans_CN``);
        the template for it must not depend on which one the importer stored. Memoised,
        since a run asks for the same few locales ~100k times.
        """
        try:
            return self._locale_of[locale]
        except KeyError:
            pass
        canonical = canonical_locale(locale)
        found = self._by_canonical.get(canonical) if canonical is not None else None
        if len(self._locale_of) < 1024:  # bounded: locales come from account data
            self._locale_of[locale] = found
        return found

    def _get(self, channel: ChannelKind, name: str, locale: str) -> _Compiled:
        file_locale = self._file_locale(locale)
        try:
            return self._compiled[(channel, name, file_locale or locale)]
        except KeyError:
            folder = self.root / CHANNEL_DIRS[ChannelKind(channel)]
            part = "typ" if channel == ChannelKind.LETTER else "txt"
            raise TemplateError(
                f"{folder / f'{name}.{locale}.{part}.j2'}: no {channel} template "
                f"{name!r} for locale {locale!r}"
            ) from None


def _run(
    part: _Part, variables: dict[str, object], creditor: Creditor | None
) -> tuple[str, bytes | None]:
    """One part rendered from ``variables``, and its JSON for the digest when known.

    ``creditor`` is the variables' own if it is a Creditor (else None). The JSON (see
    :func:`_json_pieces`) is given for an HTML part that is one run of output (``flat``:
    its text is exactly the pieces joined) when the finishing pass left the text as it
    was; otherwise None, and the digest escapes the finished text.
    """
    template = part.template
    if creditor is not None and part.by_creditor is not None:
        template = part.by_creditor.template(creditor) or template
    if part.globals is not None:
        # Jinja's globals (``range``, ...) stay visible to the templates that name one;
        # a plain dict, so the merge is one C-level copy.
        variables = {**part.globals, **variables}
    try:
        try:
            # What template.new_context(variables, shared=True) makes (Jinja's new_context
            # with a shared parent and no locals), less its two calls: the variables are
            # handed over as they are, not copied into a fresh dict per part.
            env = template.environment
            jinja_context = env.context_class(
                env, variables, template.name, template.blocks, template.globals
            )
            raw = "".join(template.root_render_func(jinja_context))
            text = part.finish(raw)
            if part.flat and text is raw:
                pieces = getattr(jinja_context, "json_pieces", None)
                if pieces is not None:
                    return text, _json_pieces(*pieces)
            return text, None
        except Exception:
            # Re-raised with the template's own file and line numbers in the traceback.
            template.environment.handle_exception()
    except Exception as exc:
        line = _template_line(exc, part.file)
        where = f"{part.file}:{line}" if line is not None else part.file
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from exc


def _template_line(exc: BaseException, file: str) -> int | None:
    """The last line of ``file`` in the traceback; Jinja rewrites frames to template lines."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == file:
            line = frame.lineno
    return line


class _Loader:
    """Collects the files of one TemplateSet.load and compiles them."""

    def __init__(self, root: Path, variables: frozenset[str]) -> None:
        self.root = root
        self.variables = variables
        self.environments: dict[tuple[str, str], _Sandbox] = {}
        # (channel, name, locale) -> part -> (path, bytes, front matter, compiled)
        self.parts: dict[Key, dict[str, tuple[Path, bytes, FrontMatter, _Source]]] = {}

    def add(self, channel: ChannelKind, path: Path, data: bytes | None = None) -> None:
        """Check and compile one file: read from ``path``, or ``data`` when given."""
        file = str(path)
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise TemplateError(
                f"{file}: file name must be <name>.<locale>.<part>.j2 with a "
                "lower_snake_case name, e.g. early_day1.en-US.txt.j2"
            )
        name, locale, part = match["name"], match["locale"], match["part"]
        if part not in _PARTS[channel]:
            allowed = ", ".join(f".{p}.j2" for p in sorted(_PARTS[channel]))
            raise TemplateError(f"{file}: {channel} templates end in {allowed}")
        try:
            babel_locale(locale)
        except ValueError as exc:
            raise TemplateError(f"{file}: {exc}") from None
        try:
            if data is None:
                data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{file}: cannot read as UTF-8: {exc}") from exc
        front, source = split_front_matter(text, file)
        self._check_front(front, file, channel, name, locale, part)
        if channel is ChannelKind.LETTER and _PACKAGE_IMPORT.search(source):
            raise TemplateError(f"{file}: letters must not import Typst packages (offline)")
        kind = {"txt": "text", "html": "html", "typ": "typst"}[part]
        template = self._compile(kind, locale, source, file)
        self.parts.setdefault((channel, name, locale), {})[part] = (path, data, front, template)

    def _check_front(
        self,
        front: FrontMatter,
        file: str,
        channel: ChannelKind,
        name: str,
        locale: str,
        part: str,
    ) -> None:
        if front.id != name:
            raise TemplateError(f"{file}: front matter id {front.id!r} must match the file name")
        if front.channel is not channel:
            raise TemplateError(
                f"{file}: front matter channel {front.channel} but the file is under "
                f"{CHANNEL_DIRS[channel]}/"
            )
        if front.locale != locale:
            raise TemplateError(
                f"{file}: front matter locale {front.locale!r} must match the file name"
            )
        wants_subject = channel is ChannelKind.EMAIL and part == "txt"
        if wants_subject and front.subject is None:
            raise TemplateError(f"{file}: the email text part needs a subject in front matter")
        if not wants_subject and front.subject is not None:
            raise TemplateError(f"{file}: only the email text part may carry a subject")

    def environment(self, kind: str, locale: str) -> _Sandbox:
        key = (kind, locale)
        env = self.environments.get(key)
        if env is None:
            finalize: Callable[[Any], Any] = {
                "text": text_value,
                "html": html_value,
                "typst": typst_value,
            }[kind]
            env = _Sandbox(
                undefined=StrictUndefined,
                autoescape=kind == "html",
                finalize=finalize,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
                auto_reload=False,
            )
            env.filters.update(make_filters(locale))
            env.filters["join"] = _remembering_join(env.filters["join"])
            if kind == "typst":
                env.filters["typst_string"] = typst_string
            self.environments[key] = env
        return env

    def _compile(self, kind: str, locale: str, source: str, file: str) -> _Source:
        env = self.environment(kind, locale)
        try:
            tree = env.parse(source, name=file, filename=file)
            for node in tree.find_all(_FORBIDDEN_NODES):
                raise TemplateError(
                    f"{file}:{node.lineno}: templates must be self-contained: no include, "
                    "extends or import (each message's hash covers only its own files)"
                )
            unknown = sorted(find_undeclared_variables(tree) - self.variables)
            if unknown:
                raise TemplateError(
                    f"{file}: unknown variable(s) {', '.join(unknown)}; "
                    "templates may use only the variables listed in docs/TEMPLATES.md"
                )
            code = env.compile(tree, name=file, filename=file)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{file}:{exc.lineno}: {exc.message}") from exc
        # A plain dict, not Jinja's ChainMap view: each render's Context lists the globals,
        # and a ChainMap lists itself slowly. The environments are never changed after load.
        globals_ = dict(env.make_globals(None))
        template = env.template_class.from_code(env, code, globals_)
        # A template that names a global (``range``, ``dict``...) gets them merged into its
        # context; the others get the context as it is. Every loaded name counts, even one
        # a {% set %} shadows: merging when not needed costs time, never correctness.
        loaded = {name.name for name in tree.find_all(nodes.Name) if name.ctx == "load"}
        by_creditor = None
        fresh = env.parse(source, name=file, filename=file)  # compiling may change a tree
        if _creditor_values(fresh):
            by_creditor = _CreditorTemplates(env, source, file, globals_)
        flat = len(fresh.body) == 1 and type(fresh.body[0]) is nodes.Output
        return _Source(template, globals_ if loaded & globals_.keys() else None, by_creditor, flat)

    def finish(self) -> dict[Key, _Compiled]:
        compiled: dict[Key, _Compiled] = {}
        for key, parts in self.parts.items():
            channel, name, locale = key
            if channel is ChannelKind.EMAIL:
                compiled[key] = self._email(key, parts)
                continue
            (part,) = parts.values()
            path, data, front, source = part
            finish = normalise_text if channel is ChannelKind.SMS else _strip_edges
            compiled[key] = _Compiled(
                info=TemplateInfo(
                    channel,
                    name,
                    locale,
                    front,
                    (path,),
                    hashlib.sha256(data).hexdigest(),
                    (data.decode("utf-8"),),
                ),
                body=_Part(str(path), source.template, finish, source.globals, source.by_creditor),
                html=None,
                subject=None,
            )
        return compiled

    def _email(
        self, key: Key, parts: Mapping[str, tuple[Path, bytes, FrontMatter, _Source]]
    ) -> _Compiled:
        channel, name, locale = key
        folder = self.root / CHANNEL_DIRS[channel]
        for part in ("txt", "html"):
            if part not in parts:
                raise TemplateError(
                    f"{folder / f'{name}.{locale}.{part}.j2'}: missing; an email needs "
                    "both a .txt.j2 and an .html.j2 part"
                )
        text_path, text_bytes, front, text_template = parts["txt"]
        html_path, html_bytes, html_front, html_template = parts["html"]
        for field in ("version", "approval"):
            if getattr(html_front, field) != getattr(front, field):
                raise TemplateError(
                    f"{html_path}: front matter {field} {getattr(html_front, field)!r} "
                    f"differs from the text part's {getattr(front, field)!r}"
                )
        if front.subject is None:  # _check_front already refused this; keeps mypy exact
            raise TemplateError(f"{text_path}: the email text part needs a subject")
        # The subject gets its own file label: its line numbers count within the string.
        subject_file = f"{text_path}#subject"
        subject = self._compile("text", locale, front.subject, subject_file)
        return _Compiled(
            info=TemplateInfo(
                channel,
                name,
                locale,
                front,
                (text_path, html_path),
                hashlib.sha256(text_bytes + html_bytes).hexdigest(),
                (text_bytes.decode("utf-8"), html_bytes.decode("utf-8")),
            ),
            body=_Part(
                str(text_path),
                text_template.template,
                normalise_text,
                text_template.globals,
                text_template.by_creditor,
            ),
            html=_Part(
                str(html_path),
                html_template.template,
                _strip_edges,
                html_template.globals,
                html_template.by_creditor,
                html_template.flat,
            ),
            subject=_Part(
                subject_file, subject.template, single_line, subject.globals, subject.by_creditor
            ),
        )
