"""B5 attachments: GetAttachment of a 50 MB file — peak RSS growth of the gateway process
(VmHWM from /proc before and after), the gateway running in a subprocess."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import urllib.request
from pathlib import Path

from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch
from archive_oa.voucher_xml import vouchers_to_xml

from b1_gateway import ENVELOPE, serve_gateway
from common import Figure, free_port, proc_status_kb, stop_process
from dataset import basic_auth, prepare_store

FILE_MB = 50


def voucher_with_big_attachment(outdir: Path, size: int) -> str:
    """One batch whose first attached voucher carries a ``size``-byte file; returns its attachment id."""
    (outdir / "attachments").mkdir(parents=True, exist_ok=True)
    vouchers, files, embedded = build_batch(catalog.ORGS[0], "2026-11", 20)
    index = next(i for i, v in enumerate(vouchers) if v.attachments and v.attachments[0].attachment_id not in embedded)
    voucher = vouchers[index]
    meta = voucher.attachments[0]
    content = os.urandom(size)  # incompressible: no layer can shrink it
    big = dataclasses.replace(meta, size=size, sha256=hashlib.sha256(content).hexdigest())
    vouchers[index] = dataclasses.replace(voucher, attachments=(big, *voucher.attachments[1:]))
    files[meta.file_name] = content
    for name, data in files.items():
        (outdir / "attachments" / name).write_bytes(data)
    (outdir / "batch.xml").write_bytes(vouchers_to_xml(vouchers, embedded))
    return meta.attachment_id


def call(url: str, body: bytes, action: str) -> int:
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"',
        "Authorization": f"Basic {basic_auth()}"})
    received = 0
    with urllib.request.urlopen(request, timeout=120) as answer:
        while chunk := answer.read(1 << 20):
            received += len(chunk)
    return received


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    size = FILE_MB * 1024 * 1024
    attachment_id = voucher_with_big_attachment(work / "b5-vouchers", size)
    data_dir = work / "b5-data"
    prepare_store(data_dir, work / "b5-vouchers")
    port = free_port()
    url = f"http://127.0.0.1:{port}/soap/archive"
    proc = serve_gateway(data_dir, port, 8, work / "b5-gateway.log")
    try:
        ping = ENVELOPE.format("<arc:Ping/>").encode()
        for _ in range(3):  # warm: imports, WSDL, first-request caches
            call(url, ping, "Ping")
        before = proc_status_kb(proc.pid, "VmHWM")
        body = ENVELOPE.format(f"<arc:GetAttachment><arc:attachmentId>{attachment_id}</arc:attachmentId></arc:GetAttachment>").encode()
        t0 = time.perf_counter()
        received = call(url, body, "GetAttachment")
        seconds = time.perf_counter() - t0
        after = proc_status_kb(proc.pid, "VmHWM")
    finally:
        stop_process(proc)
    if received < size:
        raise RuntimeError(f"B5: GetAttachment answered {received} bytes for a {size}-byte file")
    growth_mb = (after - before) / 1024
    extra = {"file_mb": FILE_MB, "vmhwm_before_mb": before / 1024, "vmhwm_after_mb": after / 1024,
             "response_bytes": received, "seconds": round(seconds, 2)}
    return [Figure("B5", f"GetAttachment {FILE_MB} MB: peak RSS growth", growth_mb, "MB", float(FILE_MB),
                   "≤ 3 × file size", growth_mb <= 3 * FILE_MB, extra)]
