"""Letter steps, each in a fresh process: ``python -m bench.letter STEP COUNT [DIR]``.

``typst``: render the shipped ``mid_day15`` letter and compile it (PDF/A-2b) COUNT times,
our production path (one account number per letter, so no cache hands back a finished
letter). ``weasyprint``: the same one-page letter as HTML + CSS through WeasyPrint COUNT
times (bench extra only). ``stage``: stage COUNT letters for the print house in DIR.
``hand_over``: hand the staged letters over as one print batch. Prints one JSON line:
seconds, letters per second, peak RSS (and for the engines the CPU seconds of the timed
loop: on a shared machine wall time includes waiting for a core).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from dispatcher.channel import Outbound
from dispatcher.channel.print_drop import PrintDropSink
from dispatcher.domain.strategy import ChannelKind
from dispatcher.template import TemplateSet, compile_pdf
from dispatcher.template.sample import sample_context

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><style>
@page {{ size: Letter; margin: 20mm 20mm 25mm 25mm;
  @bottom-left {{ content: "{creditor} · Account {account}"; font-size: 8pt; color: #505050 }}
  @bottom-right {{ content: "Page " counter(page) " of " counter(pages); font-size: 8pt }} }}
body {{ font-family: "DejaVu Serif", serif; font-size: 11pt; line-height: 1.35 }}
.sender {{ position: absolute; top: 0; right: 0; width: 80mm; text-align: right;
  font-size: 9pt }}
.sender b {{ font-size: 12pt }}
.window {{ position: absolute; left: calc(1in - 25mm); top: calc(2.125in - 20mm);
  width: 3.75in; height: 1in; font-size: 10.5pt; line-height: 1.2 }}
.ref {{ position: absolute; right: 0; top: 30mm; width: 62mm; font-size: 9pt }}
.ref td {{ padding: 0 3mm 1mm 0 }}
.body {{ margin-top: 78mm; text-align: justify }}
.notice {{ border: 0.5pt solid #777; padding: 3mm; font-size: 9pt }}
</style></head><body>
<div class="sender"><b>{creditor}</b><br>{creditor_address}<br>Phone {phone}<br>{email}</div>
<div class="window">{name}<br>{address}</div>
<table class="ref"><tr><td>Date</td><td>{today}</td></tr>
<tr><td>Account</td><td>{account}</td></tr><tr><td>Amount due</td><td><b>{amount}</b></td></tr>
<tr><td>Due date</td><td>{due}</td></tr><tr><td>Days past due</td><td>{dpd}</td></tr></table>
<div class="body"><p><b>Your account is {dpd} days past due</b></p>
<p>Dear {name},</p>
<p>Our records show that the payment of {amount} that was due on {due} on your account
{account} has not yet been received. The account is now {dpd} days past due.</p>
<p>We understand that circumstances can change. Please pay the amount due, or contact us so
we can work out an arrangement that suits you. If you have already paid, thank you, and
please disregard this letter.</p>
<p><b>How to pay or reach us</b></p>
<ul><li>Online: {link}</li><li>Phone: {phone} (Monday to Friday, 8 a.m. to 8 p.m.)</li>
<li>Email: {email}</li></ul>
<p>If you believe you do not owe this amount, or any part of it, please tell us in writing
and we will review your account.</p>
<p>Sincerely,</p><p>{creditor}<br>Customer Accounts Department</p>
<div class="notice">This is a communication from a debt collector. This is an attempt to
collect a debt and any information obtained will be used for that purpose.</div></div>
</body></html>
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _typst(count: int) -> float:
    templates = TemplateSet.load(ROOT / "templates")
    context = sample_context("en-US", dpd=45, stage_id="mid")
    pdf = compile_pdf(templates.render(ChannelKind.LETTER, "mid_day15", "en-US", context).body)
    start, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        # A different account each time, so no cache can hand back a finished letter.
        context["account_id"] = f"NW-{n:08d}"
        source = templates.render(ChannelKind.LETTER, "mid_day15", "en-US", context).body
        pdf = compile_pdf(source)
    seconds = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu
    assert pdf.startswith(b"%PDF")
    return seconds


def _weasyprint(count: int) -> float:
    from html import escape

    from weasyprint import HTML as Html
    from weasyprint.text.fonts import FontConfiguration

    context = sample_context("en-US", dpd=45, stage_id="mid")
    creditor = context["creditor"]
    values = {
        "creditor": creditor.name,  # type: ignore[attr-defined]
        "creditor_address": "<br>".join(creditor.address_lines),  # type: ignore[attr-defined]
        "phone": creditor.phone,  # type: ignore[attr-defined]
        "email": creditor.email,  # type: ignore[attr-defined]
        "name": escape(str(context["customer_name"])),
        "address": "<br>".join(escape(line) for line in context["address_lines"]),  # type: ignore[attr-defined]
        "today": "December 1, 2026",
        "account": context["account_id"],
        "amount": "$12,345.67",
        "due": "March 1, 2025",
        "dpd": context["days_overdue"],
        "link": context["payment_link"],
    }
    # One font configuration for every letter, as our path keeps one Typst compiler:
    # each engine gets its caches.
    fonts = FontConfiguration()
    pdf = Html(string=HTML.format(**values)).write_pdf(font_config=fonts)
    start, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        values["account"] = f"NW-{n:08d}"
        pdf = Html(string=HTML.format(**values)).write_pdf(font_config=fonts)
    seconds = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu
    assert pdf.startswith(b"%PDF")
    return seconds


def _sink(directory: Path) -> PrintDropSink:
    (directory / "drop").mkdir(parents=True, exist_ok=True)
    return PrintDropSink(directory / "drop", directory / "work", compile_pdf)


def _stage(count: int, directory: Path) -> float:
    templates = TemplateSet.load(ROOT / "templates")
    sink = _sink(directory)
    context = sample_context("en-US", dpd=45, stage_id="mid")
    base = Outbound(
        message_id="",
        account_id="",
        channel=ChannelKind.LETTER,
        recipient="Margaret Thompson-Whitfield\n1428 Elm Street, Apt 3B\n01105 Springfield, MA",
        body="",
        stage="mid",
    )
    start = time.perf_counter()
    for n in range(count):
        context["account_id"] = f"NW-{n:08d}"
        body = templates.render(ChannelKind.LETTER, "mid_day15", "en-US", context).body
        message = replace(base, message_id=f"{n:032x}", account_id=f"NW-{n:08d}", body=body)
        asyncio.run(sink.deliver(message))
    return time.perf_counter() - start


def _hand_over(directory: Path) -> float:
    sink = _sink(directory)
    start = time.perf_counter()
    asyncio.run(sink.hand_over(NOW))
    seconds = time.perf_counter() - start
    (batch,) = sink.handed()
    result["pages"] = sum(letter.pages for letter in batch.letters)
    result["batch_mb"] = sum(p.stat().st_size for p in (directory / "drop").glob("*.pdf")) / 1e6
    return seconds


result: dict[str, float] = {}


def main() -> None:
    step, count = sys.argv[1], int(sys.argv[2])
    directory = Path(sys.argv[3]) if len(sys.argv) > 3 else Path()
    if step == "typst":
        seconds = _typst(count)
    elif step == "weasyprint":
        seconds = _weasyprint(count)
    elif step == "stage":
        seconds = _stage(count, directory)
    elif step == "hand_over":
        seconds = _hand_over(directory)
    else:
        sys.exit(f"unknown step {step!r}")
    result.update(seconds=seconds, per_s=count / seconds, peak_mb=_peak_mb())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
