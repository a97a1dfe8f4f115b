<?php
// The archive gateway called by PHP's own SoapClient (ext/soap), as an OA written in PHP
// would: the WSDL is loaded over HTTP (cache off), the account goes in a WS-Security
// UsernameToken header built by hand (ext/soap has no WS-Security), and once in HTTP Basic.
// Usage: php gateway_client.php PLAN.json — prints one JSON line per operation.

ini_set('soap.wsdl_cache_enabled', '0');
ini_set('default_socket_timeout', '60');

const WSSE_NS = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd';
const PASSWORD_TEXT = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText';

$plan = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);

function emit(string $op, array $values): void
{
    echo json_encode(['op' => $op] + $values, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
}

/** Run one operation; an exception becomes that operation's error line, the rest go on. */
function attempt(string $op, callable $call): void
{
    try {
        emit($op, $call());
    } catch (Throwable $e) {
        emit($op, ['error' => get_class($e) . ': ' . $e->getMessage()]);
    }
}

function client(array $plan, array $options = []): SoapClient
{
    return new SoapClient($plan['wsdl'], $options + [
        'cache_wsdl' => WSDL_CACHE_NONE,
        'soap_version' => SOAP_1_1,
        'encoding' => 'UTF-8',
        'exceptions' => true,
        'trace' => true,
        'connection_timeout' => 30,
        // a wrapper holding one item still gives an array
        'features' => SOAP_SINGLE_ELEMENT_ARRAYS,
    ]);
}

function username_token(string $user, string $password): SoapHeader
{
    $xml = sprintf(
        '<wsse:Security xmlns:wsse="%s" soap:mustUnderstand="1" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        . '<wsse:UsernameToken><wsse:Username>%s</wsse:Username>'
        . '<wsse:Password Type="%s">%s</wsse:Password></wsse:UsernameToken></wsse:Security>',
        WSSE_NS,
        htmlspecialchars($user, ENT_XML1 | ENT_QUOTES, 'UTF-8'),
        PASSWORD_TEXT,
        htmlspecialchars($password, ENT_XML1 | ENT_QUOTES, 'UTF-8')
    );
    return new SoapHeader(WSSE_NS, 'Security', new SoapVar($xml, XSD_ANYXML), true);
}

/** A list element of an array wrapper (SOAP_SINGLE_ELEMENT_ARRAYS: always an array). */
function items($wrapper, string $member): array
{
    if ($wrapper === null || !isset($wrapper->$member)) {
        return [];
    }
    return $wrapper->$member;
}

emit('_client', ['version' => 'PHP ' . PHP_VERSION . ', ext-soap ' . phpversion('soap')]);

$soap = client($plan);
$soap->__setSoapHeaders([username_token($plan['user'], $plan['password'])]);

attempt('Ping', function () use ($plan) {
    $r = client($plan)->Ping(new stdClass());  // anonymous: a client without the header
    return ['version' => $r->version, 'serverTime' => $r->serverTime];
});

attempt('QueryVouchers', function () use ($soap, $plan) {
    $exact = $soap->QueryVouchers([
        'orgCode' => $plan['orgCode'],
        'amountMin' => $plan['amount'],  // decimal as text: never through a PHP float
        'amountMax' => $plan['amount'],
        'page' => 1,
        'pageSize' => 50,
    ]);
    $sample = $soap->QueryVouchers(['orgCode' => $plan['sampleOrgCode'], 'page' => 1, 'pageSize' => 5]);
    return [
        'total' => $exact->total,
        'items' => array_map(fn($v) => [
            'voucherId' => $v->voucherId,
            'summary' => $v->summary,
            'totalAmount' => $v->totalAmount,
        ], items($exact->items, 'voucher')),
        'sampleTotal' => $sample->total,
        'sampleOrgCodes' => array_map(fn($v) => $v->orgCode, items($sample->items, 'voucher')),
    ];
});

function voucher_line($v): array
{
    return [
        'voucherId' => $v->voucherId,
        'orgName' => $v->orgName,
        'totalAmount' => $v->totalAmount,
        'entries' => array_map(fn($e) => [
            'lineNo' => $e->lineNo,
            'accountName' => $e->accountName,
            'debit' => $e->debit,
            'credit' => $e->credit,
        ], items($v->entries, 'entry')),
        'attachments' => array_map(fn($a) => [
            'attachmentId' => $a->attachmentId,
            'fileName' => $a->fileName,
            'size' => $a->size,
            'sha256' => $a->sha256,
        ], items($v->attachments, 'attachment')),
    ];
}

attempt('GetVoucher', fn() => voucher_line($soap->GetVoucher(['voucherId' => $plan['voucherId']])->voucher));

attempt('GetVoucherDocument', fn() => [
    'document' => $soap->GetVoucherDocument(['voucherId' => $plan['voucherId']])->document,
]);

function attachment_line($soap, string $id): array
{
    $r = $soap->GetAttachment(['attachmentId' => $id]);  // base64Binary arrives decoded
    return [
        'fileName' => $r->fileName,
        'size' => $r->size,
        'sha256' => $r->sha256,
        'contentLength' => strlen($r->content),
        'contentSha256' => hash('sha256', $r->content),
    ];
}

attempt('GetAttachment', fn() => attachment_line($soap, $plan['attachmentId']));

attempt('ArchiveDocument', function () use ($soap, $plan) {
    $a = $plan['archive'];
    $r = $soap->ArchiveDocument([
        'sourceSystem' => $a['sourceSystem'],
        'sourceId' => $a['sourceId'],
        'docType' => $a['docType'],
        'orgCode' => $a['orgCode'],
        'period' => $a['period'],
        'title' => $a['title'],
        'amount' => $a['amount'],
        'oaRequestId' => $a['oaRequestId'],
        'fields' => ['field' => $a['fields']],
        'attachments' => ['attachment' => array_map(fn($f) => [
            'fileName' => $f['fileName'],
            'mimeType' => $f['mimeType'],
            'content' => base64_decode($f['base64'], true),  // raw bytes: ext/soap encodes them
        ], $a['attachments'])],
    ]);
    return [
        'archiveId' => $r->archiveId,
        'archivalCode' => $r->archivalCode,
        'duplicate' => $r->duplicate,
        'readBack' => attachment_line($soap, $r->archiveId . '-1'),
    ];
});

attempt('SubmitWorkflowResult', function () use ($soap, $plan) {
    $w = $plan['workflow'];
    $r = $soap->SubmitWorkflowResult([
        'oaRequestId' => $w['oaRequestId'],
        'state' => $w['state'],
        'finishedAt' => $w['finishedAt'],
        'approvals' => ['approval' => $w['approvals']],
    ]);
    return [
        'accepted' => $r->accepted,
        'voucherId' => $r->voucherId,
        'voucherState' => $r->voucherState,
        'duplicate' => $r->duplicate,
    ];
});

attempt('HttpBasic', function () use ($plan) {
    $basic = client($plan, ['login' => $plan['user'], 'password' => $plan['password']]);
    return voucher_line($basic->GetVoucher(['voucherId' => $plan['voucherId']])->voucher);
});

attempt('Fault', function () use ($soap, $plan) {
    try {
        $soap->GetVoucher(['voucherId' => $plan['missingVoucherId']]);
    } catch (SoapFault $fault) {
        return [
            'faultCode' => $fault->detail->GatewayFault->code ?? null,
            'faultString' => $fault->faultstring,
        ];
    }
    return ['error' => 'GetVoucher of a missing voucher answered without a fault'];
});
