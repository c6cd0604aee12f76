"""Letters end to end: shipped templates and hostile names through Typst to a real PDF."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typst
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError
from dispatcher.template import TemplateSet, compile_pdf
from dispatcher.template.letter import default_font_paths
from dispatcher.template.sample import sample_account, sample_context

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
LETTERS = [("mid_day15", 45), ("late_day1", 91), ("pre_legal_day1", 181)]


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet.load(TEMPLATES)


def families() -> set[str]:
    fonts = typst.Fonts(
        include_system_fonts=False, font_paths=[str(p) for p in default_font_paths()]
    )
    return set(fonts.families())


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def flat(text: str) -> str:
    """PDF text extraction breaks lines where the layout did; compare without them."""
    return re.sub(r"\s+", " ", text)


def letter(templates: TemplateSet, name: str, locale: str, **changes: object) -> str:
    dpd = dict(LETTERS).get(name, 45)
    context = sample_context(locale, dpd=dpd, stage_id="mid")
    context.update(changes)
    return templates.render(ChannelKind.LETTER, name, locale, context).body


@pytest.mark.parametrize(("name", "dpd"), LETTERS)
def test_english_letters_compile_with_name_and_amount(
    templates: TemplateSet, name: str, dpd: int
) -> None:
    pdf = compile_pdf(letter(templates, name, "en-US"))
    assert pdf.startswith(b"%PDF")
    text = flat(" ".join(pages_text(pdf)))
    assert "Margaret Thompson-Whitfield" in text
    assert "$12,345.67" in text
    assert "Northwind Lending" in text
    assert "This is a communication from a debt collector." in text
    assert f"{dpd}" in text
    assert "Page 1 of 1" in text


@pytest.mark.parametrize(("name", "dpd"), LETTERS)
def test_chinese_letters_compile_with_chinese_text(
    templates: TemplateSet, name: str, dpd: int
) -> None:
    if "Noto Serif CJK SC" not in families():
        pytest.fail("zh-CN letters need fonts-noto-cjk (apt-get install fonts-noto-cjk)")
    pdf = compile_pdf(letter(templates, name, "zh-CN"))
    assert pdf.startswith(b"%PDF")
    text = flat(" ".join(pages_text(pdf)))
    assert "欧阳明华" in text
    assert "¥12,345.67" in text
    assert "本函由债务催收方发出" in text
    assert "尊敬的" in text
    assert "第 1 页，共 1 页" in text


HOSTILE_NAMES = [
    '#read("/etc/passwd")',
    "*bold* _em_",
    "]",
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "$x^2$",
    "@label <lbl>",
    "back\\slash",
    "quote \" and '",
    "= Heading",
    "// comment /* open",
    "1. Item -- dash...",
    "שלום",
    "欧阳明华",
]


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_name_prints_literally_in_the_pdf(templates: TemplateSet, hostile: str) -> None:
    source = letter(templates, "mid_day15", "en-US", customer_name=hostile)
    text = flat(" ".join(pages_text(compile_pdf(source))))
    assert f"Dear {hostile}," in text
    assert "root:" not in text  # /etc/passwd was never read
    assert "49" not in text


def test_emoji_and_right_to_left_text_print(templates: TemplateSet) -> None:
    if "DejaVu Sans" not in families():
        pytest.skip("needs a font with emoji and Arabic glyphs (fonts-dejavu-core)")
    source = letter(templates, "mid_day15", "en-US", customer_name="Jane 😀 مرحبا")
    text = flat(" ".join(pages_text(compile_pdf(source))))
    assert "Jane 😀" in text
    assert "مرحبا" in text


def test_a_long_letter_flows_onto_numbered_pages(templates: TemplateSet, tmp_path: Path) -> None:
    shipped = (TEMPLATES / "letters" / "mid_day15.en-US.typ.j2").read_text(encoding="utf-8")
    long_body = (
        "{% for n in range(60) %}\nParagraph {{ n }}: {{ customer_name }} owes "
        "{{ balance|money }}.\n\n{% endfor %}\nSincerely,"
    )
    (tmp_path / "letters").mkdir()
    (tmp_path / "letters" / "mid_day15.en-US.typ.j2").write_text(
        shipped.replace("Sincerely,", long_body, 1), encoding="utf-8"
    )
    source = TemplateSet.load(tmp_path).render(
        ChannelKind.LETTER, "mid_day15", "en-US", sample_context("en-US", dpd=45)
    )
    pages = pages_text(compile_pdf(source.body))
    assert len(pages) >= 2
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
    assert "Paragraph 59" in flat(" ".join(pages))


def test_pdf_is_reproducible_with_a_timestamp(templates: TemplateSet) -> None:
    source = letter(templates, "mid_day15", "en-US")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert compile_pdf(source, timestamp=at) == compile_pdf(source, timestamp=at)


def test_typst_errors_become_template_errors_without_the_source() -> None:
    with pytest.raises(TemplateError, match=r"line 2, column \d+: .*unclosed delimiter") as info:
        compile_pdf("Secret Customer Name\n#let x = (\n")
    assert "Secret Customer Name" not in str(info.value)


def test_letters_cannot_read_files() -> None:
    with pytest.raises(TemplateError, match=r"not found|failed to load"):
        compile_pdf('#read("/etc/passwd")')


def test_package_imports_are_refused_before_any_download() -> None:
    with pytest.raises(TemplateError, match="compile offline"):
        compile_pdf('#import "@preview/cetz:0.3.0": canvas\nHi')


def fonts_of(pdf: bytes) -> list[DictionaryObject]:
    """Every font dictionary a page uses, Type0 fonts by their descendant CID fonts."""
    found: list[DictionaryObject] = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        resources = page["/Resources"].get_object()
        for ref in resources.get("/Font", DictionaryObject()).get_object().values():
            font = ref.get_object()
            if font["/Subtype"] == "/Type0":
                found += [d.get_object() for d in font["/DescendantFonts"]]
            else:
                found.append(font)
    return found


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_letters_are_pdf_a_2b_with_every_font_embedded(templates: TemplateSet, locale: str) -> None:
    pdf = compile_pdf(letter(templates, "pre_legal_day1", locale))
    reader = PdfReader(io.BytesIO(pdf))
    xmp = reader.xmp_metadata
    assert xmp is not None, "PDF/A needs XMP metadata on the catalog"
    xml = xmp.stream.get_data().decode("utf-8")
    # ISO 19005-2 part 2, conformance level B, declared in the pdfaid schema.
    assert re.search(r"pdfaid:part(?:>|=\")2", xml), xml[:400]
    assert re.search(r"pdfaid:conformance(?:>|=\")B", xml), xml[:400]
    assert "/OutputIntents" in reader.trailer["/Root"]
    fonts = fonts_of(pdf)
    assert fonts
    for font in fonts:
        descriptor = font["/FontDescriptor"].get_object()
        embedded = {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor)
        assert embedded, f"font {font.get('/BaseFont')} is not embedded"


def placed_text(pdf: bytes) -> list[tuple[str, float, float]]:
    """(text, x, distance of its baseline from the top) on page 1, in points."""
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    height = float(page.mediabox.height)
    found: list[tuple[str, float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            found.append((text.strip(), x, height - y))

    page.extract_text(visitor_text=visit)
    return found


MM = 72 / 25.4
INCH = 72.0
# (country, page size in points, window field: left, top, width, height in points)
WINDOWS = [
    # US Letter for a #10 window envelope: 1 in from the left, 2 1/8 to 3 1/8 in from the top.
    ("US", (612.0, 792.0), (1 * INCH, 2.125 * INCH, 3.75 * INCH, 1 * INCH)),
    # A4, DIN 5008 form B: 20 mm from the left, 45 mm from the top, 85 x 45 mm.
    ("DE", (595.28, 841.89), (20 * MM, 45 * MM, 85 * MM, 45 * MM)),
    ("CN", (595.28, 841.89), (20 * MM, 45 * MM, 85 * MM, 45 * MM)),
]


@pytest.mark.parametrize(("country", "size", "window"), WINDOWS)
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_the_address_block_sits_in_the_envelope_window_for_the_country(
    templates: TemplateSet,
    locale: str,
    country: str,
    size: tuple[float, float],
    window: tuple[float, float, float, float],
) -> None:
    name = "Margaret Thompson" if locale == "en-US" else "欧阳明华"
    pdf = compile_pdf(letter(templates, "mid_day15", locale, country=country))
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(size, abs=1)
    left, top, width, height = window
    placed = placed_text(pdf)
    # The first time the name appears, top down, is the recipient line in the window; the
    # address's last line (its postal code or country) must be inside the window too.
    name_at = min((t for t in placed if name in t[0]), key=lambda t: t[2])
    country_line = sample_account(locale).address.country  # type: ignore[union-attr]
    last_at = min(
        (t for t in placed if t[0].strip() == country_line and t[2] > name_at[2]),
        key=lambda t: t[2],
    )
    for _text, x, y in (name_at, last_at):
        assert left <= x <= left + width - 20 * MM, (x / MM, y / MM)
        assert top + 2 * MM <= y <= top + height, (x / MM, y / MM)


def test_a_letter_without_a_country_uses_a4_din_5008(templates: TemplateSet) -> None:
    pdf = compile_pdf(letter(templates, "late_day1", "en-US", country=""))
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    assert float(page.mediabox.height) == pytest.approx(841.89, abs=1)


def test_threads_compiling_their_first_letters_at_once_share_one_live_root() -> None:
    """Two threads starting at the same moment once made two roots; the one dropped was
    removed with its folder while a compiler still used it (FileNotFoundError)."""
    import threading

    from dispatcher.template import letter

    saved = list(letter._ROOT)
    letter._ROOT.clear()
    start = threading.Barrier(8)
    roots: list[str] = []

    def first() -> None:
        start.wait()
        roots.append(letter._empty_root())

    try:
        threads = [threading.Thread(target=first) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(roots)) == 1 and Path(roots[0]).is_dir()
    finally:
        letter._ROOT[:] = saved or letter._ROOT


ARTEFACTS = Path(__file__).resolve().parents[1] / "artefacts" / "letters"


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
@pytest.mark.parametrize(("name", "dpd"), LETTERS)
def test_each_shipped_letter_is_drawn_as_a_png_for_people_to_look_at(
    templates: TemplateSet, name: str, dpd: int, locale: str
) -> None:
    """Page 1 of every shipped letter, drawn by poppler (another PDF reader than the one
    that wrote it) into tests/artefacts/letters/, for compliance to look at after a run."""
    import struct
    import subprocess

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    pdf = ARTEFACTS / f"{name}.{locale}.pdf"
    pdf.write_bytes(compile_pdf(letter(templates, name, locale)))
    stem = ARTEFACTS / f"{name}.{locale}"

    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", pdf, stem],
        check=True,
        capture_output=True,
    )

    png = Path(f"{stem}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    # A page, upright: US Letter (8.5 x 11 in: 510 x 660) or A4 (210 x 297 mm: 496-497 x
    # 702) at 60 dpi, as the address says: US letters for a #10 window envelope.
    expected = (510, 660) if locale == "en-US" else (497, 702)
    assert abs(width - expected[0]) <= 1 and abs(height - expected[1]) <= 1
    assert len(png) > 5_000  # text drawn, not a blank page
