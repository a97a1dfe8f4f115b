"""Every switch of the OA simulator in one frozen object.

The command line (``archive-oa oa-sim``), the ``ARCHIVE_OA_SIM_<SWITCH>`` environment
variables and the embedded API (tests, ``archive-oa demo``) all build a
``SimulatorConfig``; nothing else configures the simulator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

DEFAULT_USER = "archive-oa"  # same as OaSettings' defaults, so the two work out of the box
DEFAULT_PASSWORD = "archive-oa"
DEFAULT_PORT = 8090
ENDPOINT_PATH = "/soap/workflow"
ENCODINGS = ("utf-8", "gbk", "gb18030")


@dataclass(frozen=True)
class SimulatorConfig:
    # --- the account the simulator accepts (WS-Security UsernameToken, PasswordText)
    user: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD

    # --- simulated approvers
    decide_after: float = 2.0  # seconds between creation and decision
    reject_above: Decimal | None = None  # reject when the amount main field exceeds this
    amount_field: str = "je"  # main field holding the amount (金额)
    reject_accounts: tuple[str, ...] = ()  # reject when a detail row has one of these accounts
    account_field: str = "kmbm"  # detail field holding the account code (科目编码)
    withdraw_rate: float = 0.0  # fraction of requests the requester withdraws (撤回)

    # --- fault injection; rates are fractions of calls in [0, 1]
    error_rate: float = 0.0  # soap:Server fault, nothing committed
    drop_rate: float = 0.0  # connection closed without an answer, nothing committed
    ambiguous_rate: float = 0.0  # Create commits, then no answer in time (others: drop)
    ambiguous_hold: float = 35.0  # seconds to hold before dropping; longer than the client's timeout
    latency_ms: int = 0  # added before every answer
    encoding: str = "utf-8"  # utf-8, gbk or gb18030: charset of every answer (requests: any of them)
    seed: int | None = None  # makes fault draws and withdrawals repeatable

    # --- callback to the adapter gateway when a request is decided (optional)
    callback_url: str | None = None
    callback_user: str | None = None
    callback_password: str | None = None

    def __post_init__(self) -> None:
        # accept the switches as text too (command line, environment, demo options)
        if self.reject_above is not None and not isinstance(self.reject_above, Decimal):
            try:
                object.__setattr__(self, "reject_above", Decimal(str(self.reject_above)))
            except InvalidOperation:
                raise ValueError(f"reject_above = {self.reject_above!r} is not an amount") from None
        object.__setattr__(self, "reject_accounts", tuple(str(a) for a in self.reject_accounts))
        for name in ("error_rate", "drop_rate", "ambiguous_rate", "withdraw_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value} must be between 0 and 1")
        if self.error_rate + self.drop_rate + self.ambiguous_rate > 1.0:
            raise ValueError(
                "error_rate + drop_rate + ambiguous_rate must not exceed 1; "
                f"got {self.error_rate} + {self.drop_rate} + {self.ambiguous_rate}"
            )
        if self.encoding.lower() not in ENCODINGS:
            raise ValueError(f"encoding = {self.encoding!r}: use one of {', '.join(ENCODINGS)}")
        if self.decide_after < 0 or self.latency_ms < 0 or self.ambiguous_hold < 0:
            raise ValueError("decide_after, latency_ms and ambiguous_hold must not be negative")

    def with_faults(self, **changes) -> "SimulatorConfig":
        """A copy with some switches changed (validated like the original)."""
        return dataclasses.replace(self, **changes)

    @property
    def fault_free(self) -> "SimulatorConfig":
        return self.with_faults(error_rate=0.0, drop_rate=0.0, ambiguous_rate=0.0, latency_ms=0)
