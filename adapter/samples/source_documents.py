"""Small, real-looking source documents (原始凭证) for the sample vouchers.

A one-page PDF for invoices and contracts, a PNG scan for bank receipts, UTF-8 text or
CSV for reports: a few KB each, deterministic for a given random state.
"""

from __future__ import annotations

import random
import struct
import zlib


def make_attachment(rng: random.Random, kind: str, voucher_id: str, n: int, org, event, date):
    """(file name, MIME type, bytes) of attachment ``n`` of a voucher."""
    total = sum(line.debit for line in event.lines)
    stem = f"{voucher_id}-{kind.lower().replace('_', '-')}-{n}"
    if kind == "BANK_RECEIPT":
        return f"{stem}.png", "image/png", _png(rng, 40, 28)
    if kind == "REPORT":
        rows = ["科目编码,科目名称,借方金额,贷方金额"]
        rows += [f"{line.account},{line.summary},{line.debit:.2f},{line.credit:.2f}" for line in event.lines]
        return f"{stem}.csv", "text/csv", ("\n".join(rows) + "\n").encode("utf-8")
    if kind == "INVOICE" and rng.random() < 0.4:
        return f"{stem}.txt", "text/plain", _text_invoice(rng, org, event, date, total)
    title = "Contract" if kind == "CONTRACT" else "VAT e-Invoice"
    lines = [
        f"{title} {voucher_id}",
        f"Seller / Buyer: {org.code} fonds {org.fonds_code}",
        f"Date: {date.isoformat()}",
        f"Amount (CNY, tax incl.): {total:.2f}",
        f"Check code: {rng.randint(10**19, 10**20 - 1)}",
    ]
    return f"{stem}.pdf", "application/pdf", _pdf(lines, padding=rng.randint(600, 2400))


def _text_invoice(rng: random.Random, org, event, date, total) -> bytes:
    lines = [
        "电子发票（增值税专用发票）",
        f"发票号码：26{rng.randint(10**17, 10**18 - 1)}",
        f"开票日期：{date.year}年{date.month:02d}月{date.day:02d}日",
        f"购买方：{org.name}",
        f"项目名称：{event.summary}",
        f"价税合计（小写）：¥{total:.2f}",
        f"开票人：{rng.choice(('李静', '王芳', '周敏'))}",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _pdf(lines: list[str], padding: int) -> bytes:
    """A valid one-page PDF 1.4 showing ``lines`` (ASCII), padded to look like a scan's size."""
    text = " ".join(
        f"BT /F1 11 Tf 56 {780 - 18 * i} Td ({_pdf_escape(line)}) Tj ET" for i, line in enumerate(lines)
    )
    stream = (text + "\n% " + "." * padding + "\n").encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _png(rng: random.Random, width: int, height: int) -> bytes:
    """An RGB PNG of a paper-like noisy scan with a red seal square."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            shade = 235 + rng.randint(0, 20)
            if 26 <= x <= 36 and 6 <= y <= 16:
                row += bytes((200, 30 + rng.randint(0, 20), 30))
            else:
                row += bytes((shade, shade, shade - rng.randint(0, 8)))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
