"""The B1 floor: a minimal lxml WSGI handler under the same waitress settings as the gateway.

It parses each request body as the gateway must (lxml, no network, no entities) and answers
with the response bytes captured once from the real gateway for that SOAPAction: what any
SOAP server on this machine pays at least for the same exchange.

    python bench/floor_wsgi.py --port N --threads 8 --response GetVoucher=FILE ...
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
    parser.add_argument("--response", action="append", default=[], metavar="ACTION=FILE")
    args = parser.parse_args()
    responses = {}
    for item in args.response:
        action, path = item.split("=", 1)
        responses[action] = Path(path).read_bytes()
    server = create_server(make_app(responses), host="127.0.0.1", port=args.port, threads=args.threads,
                           ident="archive-oa")
    server.run()


if __name__ == "__main__":
    main()
