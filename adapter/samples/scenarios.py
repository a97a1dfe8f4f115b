"""Typical business events (经济业务) of a Chinese enterprise, as balanced entry sets.

Each scenario takes the voucher's total (the debit side) and splits it into entries, so
the generator controls the amount distribution (e.g. how many exceed the approval limit)
and every voucher balances by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ..domain.model import AuxiliaryItem
from . import catalog

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Line:
    summary: str
    account: str
    debit: Decimal = Decimal("0.00")
    credit: Decimal = Decimal("0.00")
    auxiliary: tuple[AuxiliaryItem, ...] = ()
    currency: str | None = None
    exchange_rate: Decimal | None = None
    original_amount: Decimal | None = None


@dataclass(frozen=True)
class Event:
    word: str  # 凭证字
    summary: str
    lines: tuple[Line, ...]
    attachment_kind: str | None = None  # the source document that usually comes with it


def split(rng: random.Random, total: Decimal, parts: int) -> list[Decimal]:
    """``total`` in ``parts`` positive cent amounts that add up exactly."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(parts)]
    scale = sum(weights)
    amounts = [(total * Decimal(w / scale)).quantize(CENT, ROUND_HALF_UP) for w in weights[:-1]]
    amounts = [max(a, CENT) for a in amounts]
    amounts.append(total - sum(amounts))
    if amounts[-1] <= 0:  # tiny totals: fall back to one line carrying it all
        return [total]
    return amounts


def _aux(kind: str, pair: tuple[str, str]) -> tuple[AuxiliaryItem, ...]:
    return (AuxiliaryItem(kind, pair[0], pair[1]),)


def _vat(total: Decimal, rate: str = "0.13") -> tuple[Decimal, Decimal]:
    """Split a tax-inclusive amount into (net, VAT)."""
    net = (total / (1 + Decimal(rate))).quantize(CENT, ROUND_HALF_UP)
    return net, total - net


def office_supplies(rng, month, total):
    dept = rng.choice(catalog.DEPARTMENTS)
    text = f"支付{month}月办公用品费"
    return Event("付", text, (
        Line(text, "6601" if dept[0] == "D03" else "6602", debit=total, auxiliary=_aux("dept", dept)),
        Line(text, "1002.01", credit=total),
    ), "INVOICE")


def customer_receipt(rng, month, total):
    customers = rng.sample(catalog.CUSTOMERS, rng.randint(1, 3))
    amounts = split(rng, total, len(customers))
    lines = [Line("收到客户货款", "1002.01", debit=total)]
    for customer, amount in zip(customers, amounts):
        lines.append(Line(f"收到{customer[1]}货款", "1122", credit=amount, auxiliary=_aux("customer", customer)))
    return Event("收", "收到客户货款", tuple(lines), "BANK_RECEIPT")


def foreign_receipt(rng, month, total):
    customer = rng.choice(catalog.FOREIGN_CUSTOMERS)
    rate = Decimal(catalog.USD_RATE)
    usd = (total / rate).quantize(CENT, ROUND_HALF_UP)
    cny = (usd * rate).quantize(CENT, ROUND_HALF_UP)
    text = f"收到{customer[1]}美元货款"
    return Event("收", text, (
        Line(text, "1002.02", debit=cny, currency="USD", exchange_rate=rate, original_amount=usd),
        Line(text, "1122", credit=cny, auxiliary=_aux("customer", customer),
             currency="USD", exchange_rate=rate, original_amount=usd),
    ), "BANK_RECEIPT")


def sale(rng, month, total):
    customer = rng.choice(catalog.CUSTOMERS)
    net, tax = _vat(total)
    text = f"销售商品给{customer[1]}"
    return Event("记", text, (
        Line(text, "1122", debit=total, auxiliary=_aux("customer", customer)),
        Line(text, "6001", credit=net),
        Line("计提增值税销项税额", "2221.02", credit=tax),
    ), "INVOICE")


def material_purchase(rng, month, total):
    supplier = rng.choice(catalog.MATERIAL_SUPPLIERS)
    net, tax = _vat(total)
    batches = split(rng, net, rng.randint(1, 4))
    text = f"采购原材料-{supplier[1]}"
    lines = [Line(f"原材料入库 第{i}批", "1403", debit=amount) for i, amount in enumerate(batches, 1)]
    lines.append(Line("增值税进项税额", "2221.01", debit=tax))
    lines.append(Line(text, "2202", credit=total, auxiliary=_aux("supplier", supplier)))
    return Event("转", text, tuple(lines), "INVOICE")


def supplier_payment(rng, month, total):
    supplier = rng.choice(catalog.SUPPLIERS)
    text = f"支付{supplier[1]}货款"
    return Event("付", text, (
        Line(text, "2202", debit=total, auxiliary=_aux("supplier", supplier)),
        Line(text, "1002.01", credit=total),
    ), "BANK_RECEIPT")


def payroll_accrual(rng, month, total):
    depts = rng.sample(catalog.DEPARTMENTS, rng.randint(3, 5))
    amounts = split(rng, total, len(depts))
    text = f"计提{month}月工资"
    lines = []
    for dept, amount in zip(depts, amounts):
        account = "6601" if dept[0] == "D03" else "6602"
        lines.append(Line(f"{text}-{dept[1]}", account, debit=amount, auxiliary=_aux("dept", dept)))
    lines.append(Line(text, "2211", credit=total))
    return Event("转", text, tuple(lines), "REPORT")


def payroll_payment(rng, month, total):
    tax = (total * Decimal("0.03")).quantize(CENT, ROUND_HALF_UP)
    previous = 12 if month == 1 else month - 1
    text = f"发放{previous}月工资"
    return Event("付", text, (
        Line(text, "2211", debit=total),
        Line("代扣个人所得税", "2221.04", credit=tax),
        Line(text, "1002.01", credit=total - tax),
    ), "BANK_RECEIPT")


def bank_charges(rng, month, total):
    text = f"支付{month}月银行手续费"
    return Event("付", text, (
        Line(text, "6603", debit=total),
        Line(text, "1002.01", credit=total),
    ), "BANK_RECEIPT")


def loan_interest(rng, month, total):
    text = f"计提{month}月短期借款利息"
    return Event("转", text, (
        Line(text, "6603", debit=total),
        Line(text, "2231", credit=total),
    ))


def employee_advance(rng, month, total):
    employee = rng.choice(catalog.EMPLOYEES)
    text = f"{employee[1]}借支差旅费"
    return Event("付", text, (
        Line(text, "1221", debit=total, auxiliary=_aux("employee", employee)),
        Line(text, "1001", credit=total),
    ))


def travel_claims(rng, month, total):
    employees = rng.sample(catalog.EMPLOYEES, rng.randint(1, 5))
    amounts = split(rng, total, len(employees))
    lines, credits = [], []
    for employee, amount in zip(employees, amounts):
        dept = rng.choice(catalog.DEPARTMENTS)
        account = "6601" if dept[0] == "D03" else "6602"
        aux = (AuxiliaryItem("dept", *dept), AuxiliaryItem("employee", *employee))
        lines.append(Line(f"{employee[1]}报销差旅费", account, debit=amount, auxiliary=aux))
        credits.append(Line(f"冲销{employee[1]}借款", "1221", credit=amount, auxiliary=_aux("employee", employee)))
    return Event("记", f"报销{month}月差旅费", tuple(lines + credits), "INVOICE")


def fixed_asset(rng, month, total):
    supplier = rng.choice(catalog.SUPPLIERS)
    project = rng.choice(catalog.PROJECTS)
    net, tax = _vat(total)
    text = f"购入生产设备-{project[1]}"
    return Event("付", text, (
        Line(text, "1601", debit=net, auxiliary=_aux("project", project)),
        Line("增值税进项税额", "2221.01", debit=tax),
        Line(f"支付{supplier[1]}设备款", "1002.01", credit=total),
    ), "CONTRACT")


def cost_transfer(rng, month, total):
    text = f"结转{month}月销售成本"
    return Event("转", text, (
        Line(text, "6401", debit=total),
        Line(text, "1405", credit=total),
    ), "REPORT")


def depreciation(rng, month, total):
    depts = rng.sample(catalog.DEPARTMENTS, rng.randint(2, 4))
    amounts = split(rng, total, len(depts))
    text = f"计提{month}月固定资产折旧"
    lines = [
        Line(f"{text}-{dept[1]}", "6601" if dept[0] == "D03" else "6602", debit=amount,
             auxiliary=_aux("dept", dept))
        for dept, amount in zip(depts, amounts)
    ]
    lines.append(Line(text, "1602", credit=total))
    return Event("转", text, tuple(lines), "REPORT")


def vat_payment(rng, month, total):
    previous = 12 if month == 1 else month - 1
    text = f"缴纳{previous}月增值税"
    return Event("付", text, (
        Line(text, "2221.03", debit=total),
        Line(text, "1002.01", credit=total),
    ), "BANK_RECEIPT")


def petty_cash(rng, month, total):
    return Event("付", "提取备用金", (
        Line("提取备用金", "1001", debit=total),
        Line("提取备用金", "1002.01", credit=total),
    ))


#: (scenario, weight, may carry a large amount above the approval limit, usual amount range)
SCENARIOS = (
    (office_supplies, 8, False, (180, 6000)),
    (customer_receipt, 10, True, (3000, 48000)),
    (foreign_receipt, 3, True, (8000, 45000)),
    (sale, 12, True, (2000, 48000)),
    (material_purchase, 10, True, (3000, 45000)),
    (supplier_payment, 8, True, (2000, 45000)),
    (payroll_accrual, 4, True, (20000, 48000)),
    (payroll_payment, 3, True, (18000, 46000)),
    (bank_charges, 5, False, (15, 600)),
    (loan_interest, 3, False, (800, 9000)),
    (employee_advance, 5, False, (500, 8000)),
    (travel_claims, 8, False, (300, 18000)),
    (fixed_asset, 3, True, (6000, 45000)),
    (cost_transfer, 4, True, (5000, 45000)),
    (depreciation, 3, False, (2000, 30000)),
    (vat_payment, 4, False, (1000, 40000)),
    (petty_cash, 3, False, (1000, 10000)),
)
