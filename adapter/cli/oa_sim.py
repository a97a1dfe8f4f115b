"""``archive-oa oa-sim``: run the reference legacy OA workflow simulator.

Every switch also reads ``ARCHIVE_OA_SIM_<SWITCH>`` (e.g. ``ARCHIVE_OA_SIM_ERROR_RATE``);
the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from decimal import Decimal, InvalidOperation

from .common import add_common, settings_from

ENV_PREFIX = "ARCHIVE_OA_SIM_"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "oa-sim",
        help="run the legacy OA workflow simulator (SOAP, wsdl/legacy-oa-workflow.wsdl)",
        description=(
            "Runs the reference legacy OA workflow service at /soap/workflow (WSDL at /soap/workflow?wsdl). "
            "Requests are kept in <data dir>/oa-sim.db and decided by simulated approvers. "
            f"Every switch can also be set as {ENV_PREFIX}<SWITCH>, e.g. {ENV_PREFIX}ERROR_RATE=0.1."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common(parser)
    env = os.environ

    def default(name: str, value):
        return env.get(ENV_PREFIX + name.upper().replace("-", "_"), value)

    net = parser.add_argument_group("network and account")
    net.add_argument("--host", default=default("host", "127.0.0.1"), help="address to listen on")
    net.add_argument("--port", type=int, default=default("port", 8090), help="port to listen on (0: any free port)")
    net.add_argument("--user", default=default("user", "archive-oa"), help="UsernameToken user accepted")
    net.add_argument("--password", default=default("password", "archive-oa"), help="UsernameToken password (PasswordText) accepted")

    rules = parser.add_argument_group("simulated approvers")
    rules.add_argument("--decide-after", type=float, default=default("decide-after", 2.0), metavar="SECONDS",
                       help="delay between creation and decision")
    rules.add_argument("--reject-above", type=_amount, default=default("reject-above", None), metavar="AMOUNT",
                       help="the finance director rejects amounts above this (default: no limit)")
    rules.add_argument("--amount-field", default=default("amount-field", "je"), metavar="NAME",
                       help="main field holding the amount")
    rules.add_argument("--reject-account", action="append", metavar="CODE", dest="reject_accounts",
                       help=f"reject when a detail row has this account code; repeatable "
                            f"({ENV_PREFIX}REJECT_ACCOUNTS: comma-separated)")
    rules.add_argument("--account-field", default=default("account-field", "kmbm"), metavar="NAME",
                       help="detail field holding the account code")
    rules.add_argument("--withdraw-rate", type=float, default=default("withdraw-rate", 0.0), metavar="R",
                       help="fraction of requests the requester withdraws")

    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--error-rate", type=float, default=default("error-rate", 0.0), metavar="R",
                        help="fraction of calls answered with a soap:Server fault (nothing committed)")
    faults.add_argument("--drop-rate", type=float, default=default("drop-rate", 0.0), metavar="R",
                        help="fraction of calls whose connection is closed without an answer (nothing committed)")
    faults.add_argument("--ambiguous-rate", type=float, default=default("ambiguous-rate", 0.0), metavar="R",
                        help="fraction of CreateWorkflowRequest calls committed, then never answered in time")
    faults.add_argument("--ambiguous-hold", type=float, default=default("ambiguous-hold", 35.0), metavar="SECONDS",
                        help="how long an ambiguous call is held before the connection drops "
                             "(longer than the client's timeout)")
    faults.add_argument("--latency-ms", type=int, default=default("latency-ms", 0), metavar="N",
                        help="milliseconds added before every answer")
    faults.add_argument("--encoding", choices=("utf-8", "gbk", "gb18030"), type=str.lower,
                        default=default("encoding", "utf-8"),
                        help="charset of every answer (requests are read in any of them)")
    faults.add_argument("--seed", type=int, default=default("seed", None), metavar="N",
                        help="makes fault draws and withdrawals repeatable")

    callback = parser.add_argument_group("callback to the adapter gateway (SubmitWorkflowResult)")
    callback.add_argument("--callback-url", default=default("callback-url", None), metavar="URL",
                          help="gateway endpoint, e.g. http://127.0.0.1:8080/soap/archive (default: no callback)")
    callback.add_argument("--callback-user", default=default("callback-user", None), metavar="U",
                          help="HTTP Basic user for the callback")
    callback.add_argument("--callback-password", default=default("callback-password", None), metavar="P",
                          help="HTTP Basic password for the callback")
    parser.set_defaults(func=run)


def config_from(args: argparse.Namespace):
    from ..oa.simulator import SimulatorConfig

    accounts = args.reject_accounts
    if accounts is None:
        accounts = [a.strip() for a in os.environ.get(ENV_PREFIX + "REJECT_ACCOUNTS", "").split(",") if a.strip()]
    try:
        return SimulatorConfig(
            user=args.user,
            password=args.password,
            decide_after=float(args.decide_after),
            reject_above=_amount(args.reject_above) if isinstance(args.reject_above, str) else args.reject_above,
            amount_field=args.amount_field,
            reject_accounts=tuple(accounts),
            account_field=args.account_field,
            withdraw_rate=float(args.withdraw_rate),
            error_rate=float(args.error_rate),
            drop_rate=float(args.drop_rate),
            ambiguous_rate=float(args.ambiguous_rate),
            ambiguous_hold=float(args.ambiguous_hold),
            latency_ms=int(args.latency_ms),
            encoding=str(args.encoding).lower(),
            seed=None if args.seed in (None, "") else int(args.seed),
            callback_url=args.callback_url or None,
            callback_user=args.callback_user,
            callback_password=args.callback_password,
        )
    except ValueError as exc:
        raise SystemExit(f"archive-oa oa-sim: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from ..environment import data_folder, listen_settings
    from ..oa.simulator import start_simulator
    from ..oa.simulator.callback import gateway_callback

    config = config_from(args)
    data_dir = data_folder(settings_from(args).data_dir)
    on_decided = gateway_callback(config) if config.callback_url else None
    with listen_settings(host=f"--host / {ENV_PREFIX}HOST", port=f"--port / {ENV_PREFIX}PORT"):
        handle = start_simulator(config, data_dir, host=args.host, port=int(args.port), on_decided=on_decided)
    print(f"OA simulator: {handle.url}")
    print(f"WSDL:         {handle.wsdl_url}")
    print(f"database:     {handle.db.path}")
    print(f"account:      {config.user} (WS-Security UsernameToken, PasswordText)")
    print("Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


def _amount(text):
    if text is None or text == "":
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount; write it like 50000 or 50000.00") from None
