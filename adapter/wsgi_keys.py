"""The WSGI environ keys the adapter sets on a request, in one place.

The gateway sets them as a request arrives and while it checks it; the call audit
(``services/call_audit.py``) and authentication read them.  Values are plain data, so
this module imports nothing.
"""

#: The request's correlation id (the caller's ``X-Correlation-Id`` if well formed).
CORRELATION_KEY = "archive_oa.correlation_id"
#: ``time.monotonic()`` when the request arrived: durations count from there (reading and
#: parsing a large body included), else from the call wrapper.
STARTED_KEY = "archive_oa.started"
#: The caller's address as resolved by the gateway (trusted proxies); REMOTE_ADDR when not set.
CLIENT_ADDRESS_KEY = "archive_oa.client_address"
#: The request's ``Origin`` (trusted proxies applied), worked out once on arrival;
#: without it ``authenticate_call`` asks the authenticator.
ORIGIN_KEY = "archive_oa.origin"
#: The operation the envelope names, once checked (for the audit of refusals).
OPERATION_KEY = "archive_oa.operation"
#: Set by the server when waitress refused a body above its own limit: the gateway then
#: answers its RequestTooLarge fault without a body to read.
BODY_REFUSED_KEY = "archive_oa.body_refused"
