"""One print file from many letters, written page by page with bounded memory.

A print batch can hold 10,000 letters (about 300 MB: every letter embeds its own font
subsets). pypdf's ``PdfWriter`` keeps every page it was given in memory until it writes,
and its incremental mode reads the whole existing file back; neither stays bounded. This
writer uses pypdf to read each letter and to serialise PDF objects, and writes each
letter's pages and everything they reference to the output as soon as the letter is
appended. What it keeps is one byte offset per object written and one reference per
page, so memory grows by a few hundred bytes per letter, not by the letter.
"""

from __future__ import annotations

import io
from array import array
from collections import deque
from typing import Final, Protocol

from pypdf import PdfReader
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    StreamObject,
)

_PAGES: Final = 1  # object number of the page tree root, written by finish()
_CATALOG: Final = 2


class Sink(Protocol):
    """Where the batch goes: anything with ``write(bytes)`` (a file, a hashing wrapper)."""

    def write(self, data: bytes, /) -> object: ...


class BatchPdfWriter:
    """Appends whole PDFs to ``out`` (a binary sink, written from its start).

    Call :meth:`append` for each letter, then :meth:`finish` once; ``pages`` counts the
    pages written so far, so a manifest can record where each letter starts.
    """

    def __init__(self, out: Sink) -> None:
        self._out = out
        self._position = 0
        # Byte offset of each object, indexed by object number (0 is the free-list head).
        self._offsets = array("q", [0, 0, 0])
        self._kids = array("q")
        self._finished = False
        self._emit(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    @property
    def pages(self) -> int:
        return len(self._kids)

    def append(self, pdf: bytes) -> int:
        """Copy every page of ``pdf`` (with its fonts, images and annotations) to the
        output; returns how many pages it had. The document's catalog, outline,
        structure tree and metadata are not copied: the batch is a print file."""
        if self._finished:
            raise ValueError("the batch PDF is finished")
        reader = PdfReader(io.BytesIO(pdf))
        copy = _Copy(reader, self)
        pages = list(reader.pages)
        for page in pages:
            ref = page.indirect_reference
            if ref is None:  # pypdf gives every page of a parsed file its reference
                raise ValueError("a page without an object number")
            self._kids.append(copy.number(ref))
        copy.run({p.indirect_reference.idnum: p for p in pages if p.indirect_reference})
        return len(pages)

    def finish(self) -> None:
        """Write the page tree, the catalog, the cross-reference table and the trailer."""
        if self._finished:
            return
        kids = " ".join(f"{k} 0 R" for k in self._kids)
        self.write_object(
            _PAGES, f"<< /Type /Pages /Kids [{kids}] /Count {len(self._kids)} >>".encode()
        )
        self.write_object(_CATALOG, f"<< /Type /Catalog /Pages {_PAGES} 0 R >>".encode())
        start = self._position
        lines = [f"xref\n0 {len(self._offsets)}\n", "0000000000 65535 f \n"]
        lines += [f"{offset:010d} 00000 n \n" for offset in self._offsets[1:]]
        self._emit("".join(lines).encode())
        self._emit(
            f"trailer\n<< /Size {len(self._offsets)} /Root {_CATALOG} 0 R >>\n"
            f"startxref\n{start}\n%%EOF\n".encode()
        )
        self._finished = True

    def reserve(self) -> int:
        """A new object number (its offset is set when the object is written)."""
        self._offsets.append(0)
        return len(self._offsets) - 1

    def write_object(self, number: int, body: bytes) -> None:
        self._offsets[number] = self._position
        self._emit(b"%d 0 obj\n%s\nendobj\n" % (number, body))

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._position += len(data)


class _Copy:
    """The objects of one source PDF reachable from its pages, renumbered for the output."""

    def __init__(self, reader: PdfReader, writer: BatchPdfWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.numbers: dict[tuple[int, int], int] = {}
        self.queue: deque[IndirectObject] = deque()
        self.tree: set[tuple[int, int]]
        root = reader.trailer.raw_get("/Root")
        pages = reader.root_object.raw_get("/Pages")
        # References to the source's catalog become null, to its page tree our root.
        self.catalog = (root.idnum, root.generation) if isinstance(root, IndirectObject) else None
        self.tree = set()
        if isinstance(pages, IndirectObject):
            self.tree.add((pages.idnum, pages.generation))

    def number(self, ref: IndirectObject) -> int:
        key = (ref.idnum, ref.generation)
        if key in self.tree:
            return _PAGES
        found = self.numbers.get(key)
        if found is None:
            found = self.numbers[key] = self.writer.reserve()
            self.queue.append(ref)
        return found

    def run(self, pages: dict[int, DictionaryObject]) -> None:
        while self.queue:
            ref = self.queue.popleft()
            page = pages.get(ref.idnum)
            body = io.BytesIO()
            if page is not None:
                # The flattened page carries what it inherited from the tree; its parent
                # becomes our page-tree root.
                entries = {k: v for k, v in page.items() if k != "/Parent"}
                self._dictionary(entries, body, first=b"/Parent %d 0 R\n" % _PAGES)
            else:
                self._write(ref.get_object(), body)
            self.writer.write_object(self.numbers[(ref.idnum, ref.generation)], body.getvalue())

    def _write(self, obj: PdfObject | None, out: io.BytesIO) -> None:
        if isinstance(obj, IndirectObject):
            key = (obj.idnum, obj.generation)
            if key == self.catalog:
                out.write(b"null")
            else:
                out.write(b"%d 0 R" % self.number(obj))
        elif isinstance(obj, StreamObject):
            # The encoded bytes are copied as they are (no decompression); the length is
            # written directly, whatever the source did.
            data = obj._data
            entries = {k: v for k, v in obj.items() if k != "/Length"}
            self._dictionary(entries, out, first=b"/Length %d\n" % len(data))
            out.write(b"\nstream\n")
            out.write(data)
            out.write(b"\nendstream")
        elif isinstance(obj, DictionaryObject):
            self._dictionary(dict(obj.items()), out)
        elif isinstance(obj, ArrayObject):
            out.write(b"[")
            for item in obj:
                out.write(b" ")
                self._write(item, out)
            out.write(b" ]")
        elif obj is None:
            out.write(b"null")
        else:
            obj.write_to_stream(out)

    def _dictionary(
        self, entries: dict[str, PdfObject], out: io.BytesIO, *, first: bytes = b""
    ) -> None:
        out.write(b"<<\n" + first)
        for key, value in entries.items():
            NameObject(key).write_to_stream(out)
            out.write(b" ")
            self._write(value, out)
            out.write(b"\n")
        out.write(b">>")
