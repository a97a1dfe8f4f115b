package archiveoa.compat;

import archiveoa.compat.generated.Approval;
import archiveoa.compat.generated.ApprovalArray;
import archiveoa.compat.generated.ArchiveGateway;
import archiveoa.compat.generated.ArchiveGateway_Service;
import archiveoa.compat.generated.AttachmentInfo;
import archiveoa.compat.generated.DecisionState;
import archiveoa.compat.generated.DocType;
import archiveoa.compat.generated.DocumentAttachment;
import archiveoa.compat.generated.DocumentAttachmentArray;
import archiveoa.compat.generated.Entry;
import archiveoa.compat.generated.Field;
import archiveoa.compat.generated.FieldArray;
import archiveoa.compat.generated.GatewayFault_Exception;
import archiveoa.compat.generated.Voucher;
import archiveoa.compat.generated.VoucherSummary;
import archiveoa.compat.generated.VoucherSummaryArray;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.xml.datatype.DatatypeFactory;
import javax.xml.datatype.XMLGregorianCalendar;
import javax.xml.ws.BindingProvider;
import javax.xml.ws.Holder;
import javax.xml.ws.handler.Handler;

/**
 * The archive gateway called through a JAX-WS client that wsimport generated from the live
 * WSDL (package archiveoa.compat.generated), as an OA written in Java would: UsernameToken
 * through a SOAPHandler, once HTTP Basic through BindingProvider.
 * Usage: java archiveoa.compat.GatewayClient PLAN.json — prints one JSON line per operation.
 */
public final class GatewayClient {
    private static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);

    private interface Call {
        Map<String, Object> run() throws Exception;
    }

    private final Map<String, Object> plan;
    private final ArchiveGateway_Service service;
    private final DatatypeFactory datatypes;

    private GatewayClient(Map<String, Object> plan) throws Exception {
        this.plan = plan;
        this.service = new ArchiveGateway_Service(new URL(text(plan, "wsdl")));  // WSDL over HTTP
        this.datatypes = DatatypeFactory.newInstance();
    }

    public static void main(String[] args) throws Exception {
        @SuppressWarnings("unchecked")
        Map<String, Object> plan = (Map<String, Object>) Json.parse(
                new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8));
        // "JAX-WS RI 2.3.0.2 svn-revision#…": the release, without the build tag
        String runtime = com.sun.xml.ws.util.RuntimeVersion.VERSION.toString().split(" svn-revision")[0];
        emit("_client", values("version", runtime + ", Java " + System.getProperty("java.version")));
        new GatewayClient(plan).runAll();
    }

    private void runAll() {
        ArchiveGateway port = withToken(service.getArchiveGateway());
        attempt("Ping", () -> {
            Holder<String> version = new Holder<>();
            Holder<XMLGregorianCalendar> serverTime = new Holder<>();
            service.getArchiveGateway().ping(version, serverTime);  // anonymous
            return values("version", version.value, "serverTime", serverTime.value.toXMLFormat());
        });
        attempt("QueryVouchers", () -> query(port));
        attempt("GetVoucher", () -> voucherLine(port.getVoucher(text(plan, "voucherId"))));
        attempt("GetVoucherDocument", () -> values("document", port.getVoucherDocument(text(plan, "voucherId"))));
        attempt("GetAttachment", () -> attachmentLine(port, text(plan, "attachmentId")));
        attempt("ArchiveDocument", () -> archive(port));
        attempt("SubmitWorkflowResult", () -> workflow(port));
        attempt("HttpBasic", () -> {
            ArchiveGateway basic = service.getArchiveGateway();
            Map<String, Object> context = ((BindingProvider) basic).getRequestContext();
            context.put(BindingProvider.USERNAME_PROPERTY, text(plan, "user"));
            context.put(BindingProvider.PASSWORD_PROPERTY, text(plan, "password"));
            return voucherLine(basic.getVoucher(text(plan, "voucherId")));
        });
        attempt("Fault", () -> {
            try {
                port.getVoucher(text(plan, "missingVoucherId"));
            } catch (GatewayFault_Exception fault) {
                return values("faultCode", fault.getFaultInfo().getCode(), "faultString", fault.getMessage());
            }
            return values("error", "GetVoucher of a missing voucher answered without a fault");
        });
    }

    private ArchiveGateway withToken(ArchiveGateway port) {
        BindingProvider provider = (BindingProvider) port;
        @SuppressWarnings("rawtypes")
        List<Handler> chain = new ArrayList<>(provider.getBinding().getHandlerChain());
        chain.add(new UsernameTokenHandler(text(plan, "user"), text(plan, "password")));
        provider.getBinding().setHandlerChain(chain);
        return port;
    }

    private Map<String, Object> query(ArchiveGateway port) throws Exception {
        BigDecimal amount = new BigDecimal(text(plan, "amount"));  // never a double
        Holder<BigInteger> page = new Holder<>(BigInteger.ONE);
        Holder<BigInteger> pageSize = new Holder<>(BigInteger.valueOf(50));
        Holder<Long> total = new Holder<>();
        Holder<VoucherSummaryArray> items = new Holder<>();
        port.queryVouchers(text(plan, "orgCode"), null, null, null, null, null, null, null,
                amount, amount, page, pageSize, total, items);
        List<Object> found = new ArrayList<>();
        for (VoucherSummary v : summaries(items.value)) {
            found.add(values("voucherId", v.getVoucherId(), "summary", v.getSummary(),
                    "totalAmount", plain(v.getTotalAmount())));
        }
        Holder<BigInteger> samplePage = new Holder<>(BigInteger.ONE);
        Holder<BigInteger> sampleSize = new Holder<>(BigInteger.valueOf(5));
        Holder<Long> sampleTotal = new Holder<>();
        Holder<VoucherSummaryArray> sampleItems = new Holder<>();
        port.queryVouchers(text(plan, "sampleOrgCode"), null, null, null, null, null, null, null,
                null, null, samplePage, sampleSize, sampleTotal, sampleItems);
        List<Object> orgCodes = new ArrayList<>();
        for (VoucherSummary v : summaries(sampleItems.value)) {
            orgCodes.add(v.getOrgCode());
        }
        return values("total", total.value, "items", found, "sampleTotal", sampleTotal.value,
                "sampleOrgCodes", orgCodes);
    }

    private static List<VoucherSummary> summaries(VoucherSummaryArray array) {
        return array == null ? Collections.emptyList() : array.getVoucher();
    }

    private static Map<String, Object> voucherLine(Voucher v) {
        List<Object> entries = new ArrayList<>();
        if (v.getEntries() != null) {
            for (Entry e : v.getEntries().getEntry()) {
                entries.add(values("lineNo", e.getLineNo(), "accountName", e.getAccountName(),
                        "debit", plain(e.getDebit()), "credit", plain(e.getCredit())));
            }
        }
        List<Object> attachments = new ArrayList<>();
        if (v.getAttachments() != null) {
            for (AttachmentInfo a : v.getAttachments().getAttachment()) {
                attachments.add(values("attachmentId", a.getAttachmentId(), "fileName", a.getFileName(),
                        "size", a.getSize(), "sha256", a.getSha256()));
            }
        }
        return values("voucherId", v.getVoucherId(), "orgName", v.getOrgName(),
                "totalAmount", plain(v.getTotalAmount()), "entries", entries, "attachments", attachments);
    }

    private static Map<String, Object> attachmentLine(ArchiveGateway port, String attachmentId) throws Exception {
        Holder<String> id = new Holder<>(attachmentId);
        Holder<String> fileName = new Holder<>();
        Holder<String> mimeType = new Holder<>();
        Holder<Long> size = new Holder<>();
        Holder<String> sha256 = new Holder<>();
        Holder<byte[]> content = new Holder<>();
        port.getAttachment(id, fileName, mimeType, size, sha256, content);
        return values("fileName", fileName.value, "size", size.value, "sha256", sha256.value,
                "contentLength", content.value.length, "contentSha256", sha256Hex(content.value));
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> archive(ArchiveGateway port) throws Exception {
        Map<String, Object> a = (Map<String, Object>) plan.get("archive");
        FieldArray fields = new FieldArray();
        for (Object item : (List<Object>) a.get("fields")) {
            Field field = new Field();
            field.setName(text(item, "name"));
            field.setValue(text(item, "value"));
            fields.getField().add(field);
        }
        DocumentAttachmentArray files = new DocumentAttachmentArray();
        for (Object item : (List<Object>) a.get("attachments")) {
            DocumentAttachment file = new DocumentAttachment();
            file.setFileName(text(item, "fileName"));
            file.setMimeType(text(item, "mimeType"));
            file.setContent(Base64.getDecoder().decode(text(item, "base64")));
            files.getAttachment().add(file);
        }
        Holder<String> archiveId = new Holder<>();
        Holder<String> archivalCode = new Holder<>();
        Holder<Boolean> duplicate = new Holder<>();
        port.archiveDocument(text(a, "sourceSystem"), text(a, "sourceId"), DocType.fromValue(text(a, "docType")),
                text(a, "orgCode"), text(a, "period"), text(a, "title"), new BigDecimal(text(a, "amount")),
                text(a, "oaRequestId"), fields, files, archiveId, archivalCode, duplicate);
        return values("archiveId", archiveId.value, "archivalCode", archivalCode.value,
                "duplicate", duplicate.value, "readBack", attachmentLine(port, archiveId.value + "-1"));
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> workflow(ArchiveGateway port) throws Exception {
        Map<String, Object> w = (Map<String, Object>) plan.get("workflow");
        ApprovalArray approvals = new ApprovalArray();
        for (Object item : (List<Object>) w.get("approvals")) {
            Approval approval = new Approval();
            approval.setStep(((BigDecimal) ((Map<String, Object>) item).get("step")).toBigIntegerExact());
            approval.setApprover(text(item, "approver"));
            approval.setAction(text(item, "action"));
            approval.setComment(text(item, "comment"));
            approval.setTime(datatypes.newXMLGregorianCalendar(text(item, "time")));
            approvals.getApproval().add(approval);
        }
        Holder<Boolean> accepted = new Holder<>();
        Holder<String> voucherId = new Holder<>();
        Holder<archiveoa.compat.generated.WorkflowState> voucherState = new Holder<>();
        Holder<Boolean> duplicate = new Holder<>();
        port.submitWorkflowResult(text(w, "oaRequestId"), null, DecisionState.fromValue(text(w, "state")),
                datatypes.newXMLGregorianCalendar(text(w, "finishedAt")), approvals,
                accepted, voucherId, voucherState, duplicate);
        return values("accepted", accepted.value, "voucherId", voucherId.value,
                "voucherState", voucherState.value == null ? null : voucherState.value.value(),
                "duplicate", duplicate.value);
    }

    // --- helpers -------------------------------------------------------------------------------

    private static void attempt(String op, Call call) {
        try {
            emit(op, call.run());
        } catch (Exception e) {
            emit(op, values("error", e.getClass().getName() + ": " + e.getMessage()));
        }
    }

    private static void emit(String op, Map<String, Object> values) {
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("op", op);
        line.putAll(values);
        OUT.println(Json.write(line));
    }

    private static Map<String, Object> values(Object... pairs) {
        Map<String, Object> map = new LinkedHashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            map.put((String) pairs[i], pairs[i + 1]);
        }
        return map;
    }

    @SuppressWarnings("unchecked")
    private static String text(Object map, String key) {
        Object value = ((Map<String, Object>) map).get(key);
        return value == null ? null : value.toString();
    }

    /** BigDecimal as written, never in E notation. */
    private static String plain(BigDecimal value) {
        return value == null ? null : value.toPlainString();
    }

    private static String sha256Hex(byte[] bytes) throws Exception {
        StringBuilder hex = new StringBuilder();
        for (byte b : MessageDigest.getInstance("SHA-256").digest(bytes)) {
            hex.append(String.format("%02x", b));
        }
        return hex.toString();
    }
}
