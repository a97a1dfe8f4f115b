"""Render the OA workflow request of one voucher version (the bytes that get sent)."""

from __future__ import annotations

from ..errors import NotFound
from .repo import ArchiveRepo


def render_workflow(store, transforms, repo: ArchiveRepo, voucher_id: str, version: int, external_key: str) -> bytes:
    """Voucher version → canonical voucher XML (attachments embedded) → WorkflowRequest.

    Reads in one short transaction; the blob reads and the transform run outside it.
    Raises ``NotFound`` when the version is gone and ``ValidationFailed`` when the
    stylesheet's input or output is invalid — both permanent for this delivery.
    """
    from ..voucher_xml import voucher_to_element  # lxml stays out of the domain imports

    with store.transaction() as conn:
        voucher = repo.load_voucher(conn, voucher_id, version=version)
    if voucher is None:
        raise NotFound(f"voucher {voucher_id} version {version} is not in the archive; discard the delivery")
    workflow_settings = getattr(transforms, "workflow", None)
    embed = getattr(workflow_settings, "embed_attachments", True)
    contents = {meta.attachment_id: store.blobs.read(meta.sha256) for meta in voucher.attachments} if embed else None
    # The workflow part is state, not content: leave it out of what the OA receives.
    element = voucher_to_element(voucher, contents, include_workflow=False)
    return transforms.voucher_to_workflow(element, external_key=external_key, source=f"voucher {voucher_id}")
