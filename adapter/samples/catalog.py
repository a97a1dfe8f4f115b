"""Master data of the bundled sample vouchers: organisations, chart of accounts, counterparties.

Account codes follow the 企业会计准则 chart of accounts (一级科目), with a few common
second-level codes (明细科目) where a real ledger would use them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Org:
    code: str
    name: str
    short_name: str
    fonds_code: str  # 全宗号
    preparers: tuple[str, ...]
    reviewer: str
    bookkeeper: str
    cashier: str


ORGS = (
    Org("HD01", "华东制造股份有限公司", "华东制造", "J101", ("陈静", "刘洋"), "周建国", "孙丽", "吴敏"),
    Org("HN02", "华南贸易有限公司", "华南贸易", "J102", ("黄晓燕", "林志强"), "郑伟", "何芳", "梁婷"),
    Org("XB03", "西部科技有限公司", "西部科技", "J103", ("杨帆", "马骏"), "赵宏", "冯雪", "罗琳"),
)

PERIODS = ("2026-09", "2026-10")

#: code -> name (科目编码 -> 科目名称)
ACCOUNTS = {
    "1001": "库存现金",
    "1002": "银行存款",
    "1002.01": "银行存款-工商银行基本户",
    "1002.02": "银行存款-中国银行美元户",
    "1122": "应收账款",
    "1221": "其他应收款",
    "1403": "原材料",
    "1405": "库存商品",
    "1601": "固定资产",
    "1602": "累计折旧",
    "2001": "短期借款",
    "2202": "应付账款",
    "2211": "应付职工薪酬",
    "2221.01": "应交税费-应交增值税(进项税额)",
    "2221.02": "应交税费-应交增值税(销项税额)",
    "2221.03": "应交税费-未交增值税",
    "2221.04": "应交税费-应交个人所得税",
    "2231": "应付利息",
    "6001": "主营业务收入",
    "6401": "主营业务成本",
    "6601": "销售费用",
    "6602": "管理费用",
    "6603": "财务费用",
}

DEPARTMENTS = (("D01", "财务部"), ("D02", "行政部"), ("D03", "销售部"), ("D04", "生产部"), ("D05", "研发部"))

CUSTOMERS = (
    ("C0001", "上海明远电子有限公司"),
    ("C0002", "杭州云帆科技有限公司"),
    ("C0003", "广州恒信贸易有限公司"),
    ("C0004", "成都天府机电有限公司"),
    ("C0005", "南京金陵精密仪器有限公司"),
)

FOREIGN_CUSTOMERS = (("C9001", "Pacific Components Ltd."), ("C9002", "Nordic Devices AB"))

SUPPLIERS = (
    ("S0001", "苏州恒达钢材有限公司"),
    ("S0002", "宁波港联物流有限公司"),
    ("S0003", "深圳华普电子元件有限公司"),
    ("S0004", "重庆长江包装材料有限公司"),
    ("S0005", "北京中关村办公设备有限公司"),
)

MATERIAL_SUPPLIERS = (SUPPLIERS[0], SUPPLIERS[2], SUPPLIERS[3])  # the ones selling 原材料

EMPLOYEES = (
    ("E1012", "王磊"),
    ("E1027", "李娜"),
    ("E1033", "张伟"),
    ("E1046", "刘芳"),
    ("E1058", "陈晨"),
    ("E1061", "赵敏"),
)

PROJECTS = (("P2026-01", "智能产线改造项目"), ("P2026-02", "新品研发项目"))

#: foreign-currency receipts use this rate (中国银行 USD 中间价, fixed for the samples)
USD_RATE = "7.1235"
