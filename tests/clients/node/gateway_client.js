// The archive gateway called by the npm `soap` client, as an OA back end written for
// Node.js would: the WSDL is loaded over HTTP, the account goes in a WS-Security
// UsernameToken (PasswordText) and once in HTTP Basic.
// Usage: node gateway_client.js PLAN.json — prints one JSON line per operation.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const soap = require('soap');

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const options = {
  // xs:decimal would become a JS number (Number(text)); money stays text.  The gateway's
  // amounts are the named type tns:Amount, which soap leaves as text anyway.
  customDeserializer: { decimal: (text) => text, Amount: (text) => text },
  wsdl_options: { timeout: 60000 },
};

function emit(op, values) {
  process.stdout.write(JSON.stringify({ op, ...values }) + '\n');
}

/** Run one operation; an error becomes that operation's error line, the rest go on. */
async function attempt(op, call) {
  try {
    emit(op, await call());
  } catch (error) {
    emit(op, { error: describe(error) });
  }
}

function describe(error) {
  const fault = error && error.root && error.root.Envelope && error.root.Envelope.Body.Fault;
  return fault ? `SOAP fault ${fault.faultcode}: ${fault.faultstring}` : String(error && error.stack || error);
}

/** A list element of an array wrapper: soap gives one item as an object, several as an array. */
function items(wrapper, member) {
  if (!wrapper || wrapper[member] === undefined) return [];
  return [].concat(wrapper[member]);
}

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');

function voucherLine(v) {
  return {
    voucherId: v.voucherId,
    orgName: v.orgName,
    totalAmount: v.totalAmount,
    entries: items(v.entries, 'entry').map((e) => ({
      lineNo: e.lineNo, accountName: e.accountName, debit: e.debit, credit: e.credit,
    })),
    attachments: items(v.attachments, 'attachment').map((a) => ({
      attachmentId: a.attachmentId, fileName: a.fileName, size: a.size, sha256: a.sha256,
    })),
  };
}

async function attachmentLine(client, attachmentId) {
  const [r] = await client.GetAttachmentAsync({ attachmentId });
  const content = Buffer.from(r.content, 'base64'); // base64Binary arrives as its text
  return {
    fileName: r.fileName, size: r.size, sha256: r.sha256,
    contentLength: content.length, contentSha256: sha256(content),
  };
}

async function main() {
  const soapPackage = require('soap/package.json');
  emit('_client', { version: `soap ${soapPackage.version}, Node.js ${process.versions.node}` });

  const client = await soap.createClientAsync(plan.wsdl, options);
  client.setSecurity(new soap.WSSecurity(plan.user, plan.password, { passwordType: 'PasswordText' }));
  const anonymous = await soap.createClientAsync(plan.wsdl, options);

  await attempt('Ping', async () => {
    const [r] = await anonymous.PingAsync({});
    return { version: r.version, serverTime: r.serverTime.toISOString() };
  });

  await attempt('QueryVouchers', async () => {
    const [exact] = await client.QueryVouchersAsync({
      orgCode: plan.orgCode, amountMin: plan.amount, amountMax: plan.amount, page: 1, pageSize: 50,
    });
    const [sample] = await client.QueryVouchersAsync({ orgCode: plan.sampleOrgCode, page: 1, pageSize: 5 });
    return {
      total: exact.total,
      items: items(exact.items, 'voucher').map((v) => ({
        voucherId: v.voucherId, summary: v.summary, totalAmount: v.totalAmount,
      })),
      sampleTotal: sample.total,
      sampleOrgCodes: items(sample.items, 'voucher').map((v) => v.orgCode),
    };
  });

  await attempt('GetVoucher', async () => {
    const [r] = await client.GetVoucherAsync({ voucherId: plan.voucherId });
    return voucherLine(r.voucher);
  });

  await attempt('GetVoucherDocument', async () => {
    const [r] = await client.GetVoucherDocumentAsync({ voucherId: plan.voucherId });
    return { document: r.document };
  });

  await attempt('GetAttachment', () => attachmentLine(client, plan.attachmentId));

  await attempt('ArchiveDocument', async () => {
    const a = plan.archive;
    const [r] = await client.ArchiveDocumentAsync({
      sourceSystem: a.sourceSystem,
      sourceId: a.sourceId,
      docType: a.docType,
      orgCode: a.orgCode,
      period: a.period,
      title: a.title,
      amount: a.amount,
      oaRequestId: a.oaRequestId,
      fields: { field: a.fields },
      attachments: {
        attachment: a.attachments.map((f) => ({ fileName: f.fileName, mimeType: f.mimeType, content: f.base64 })),
      },
    });
    return {
      archiveId: r.archiveId,
      archivalCode: r.archivalCode,
      duplicate: r.duplicate,
      readBack: await attachmentLine(client, `${r.archiveId}-1`),
    };
  });

  await attempt('SubmitWorkflowResult', async () => {
    const w = plan.workflow;
    const [r] = await client.SubmitWorkflowResultAsync({
      oaRequestId: w.oaRequestId,
      state: w.state,
      finishedAt: w.finishedAt,
      approvals: { approval: w.approvals },
    });
    return { accepted: r.accepted, voucherId: r.voucherId, voucherState: r.voucherState, duplicate: r.duplicate };
  });

  await attempt('HttpBasic', async () => {
    const basic = await soap.createClientAsync(plan.wsdl, options);
    basic.setSecurity(new soap.BasicAuthSecurity(plan.user, plan.password));
    const [r] = await basic.GetVoucherAsync({ voucherId: plan.voucherId });
    return voucherLine(r.voucher);
  });

  await attempt('Fault', async () => {
    try {
      await client.GetVoucherAsync({ voucherId: plan.missingVoucherId });
    } catch (error) {
      const fault = error.root.Envelope.Body.Fault;
      return { faultCode: fault.detail.GatewayFault.code, faultString: fault.faultstring };
    }
    return { error: 'GetVoucher of a missing voucher answered without a fault' };
  });
}

main().catch((error) => {
  process.stderr.write(`${describe(error)}\n`);
  process.exit(1);
});
