"""The B1 floor: a minimal lxml WSGI handler under the same waitress settings as the gateway.

It parses each request body as the gateway must (lxml, no network, no entities) and answers
with the response bytes captured once from the real gateway for that SOAPAction: what any
SOAP server on this machine pays at least for the same exchange.

    python bench/floor_wsgi.py --port N --threads 8 [--processes 2] --response GetVoucher=FILE ...

With ``--processes N`` it pre-forks exactly as ``archive-oa serve --processes N`` does (the same
``archive_oa.gateway.prefork``), so B1 compares the two at the same process count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lxml import etree
from waitress import create_server

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def make_app(responses: dict[str, bytes]):
    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        root = etree.fromstring(body, PARSER)
        # touch the operation element, as a dispatcher would
        operation = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")[0]
        action = environ.get("HTTP_SOAPACTION", "").strip('"') or etree.QName(operation).localname
        payload = responses[action]
        start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--response", action="append", default=[], metavar="ACTION=FILE")
    args = parser.parse_args()
    responses = {}
    for item in args.response:
        action, path = item.split("=", 1)
        responses[action] = Path(path).read_bytes()
    app = make_app(responses)
    if args.processes == 1:
        create_server(app, host="127.0.0.1", port=args.port, threads=args.threads, ident="archive-oa").run()
        return
    import logging

    from archive_oa.gateway.prefork import serve_preforked
    from archive_oa.gateway.server import listening_socket

    logging.basicConfig(level=logging.INFO)  # "gateway process N serving": B1 waits for every child
    sock = listening_socket("127.0.0.1", args.port)

    def serve_child(slot, ready):
        server = create_server(app, sockets=[sock], threads=args.threads, ident="archive-oa")
        ready()
        server.run()

    raise SystemExit(serve_preforked(args.processes, serve_child))


if __name__ == "__main__":
    main()
