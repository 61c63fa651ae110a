"""The shared benchmark workload: an ``OrderPlaced`` event of about 600 bytes of JSON.

Deterministic in ``i`` (no RNG state), so every benchmark and every run sees the same
events. The customer (the data subject) is ``i % customers``; name, email and phone are the
three PII fields. The city/postcode/country address stays clear: coarse enough for routing
and analytics in this workload.
"""

from __future__ import annotations

from typing import Any

from eventward._internal.fieldspec import FieldSpec

EVENT_TYPE = "OrderPlaced"
SOURCE = "/shop/checkout"

ORDER_SPEC = FieldSpec.from_dict(
    {
        "subject": "customer.id",
        "fields": {"customer.name": "pii", "customer.email": "pii", "customer.phone": "pii"},
    }
)

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie")
_LAST = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lamport",
)
_CITIES = (
    ("Berlin", "DE", "10115"), ("Lyon", "FR", "69001"), ("Porto", "PT", "4000-001"),
    ("Leeds", "GB", "LS1 1AA"), ("Austin", "US", "73301"), ("Osaka", "JP", "530-0001"),
)
_PRODUCTS = (
    ("SKU-1001", "Mechanical keyboard", 8900), ("SKU-1002", "USB-C cable 2m", 1299),
    ("SKU-1003", "27in monitor", 27900), ("SKU-1004", "Laptop stand", 3450),
    ("SKU-1005", "Noise-cancelling headphones", 19900), ("SKU-1006", "Webcam 1080p", 5990),
    ("SKU-1007", "Desk lamp", 2490),
)


def customer(c: int) -> dict[str, Any]:
    first, last = _FIRST[c % len(_FIRST)], _LAST[(c // len(_FIRST)) % len(_LAST)]
    city, country, postcode = _CITIES[c % len(_CITIES)]
    return {
        "id": f"cust-{c:06d}",
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}.{c}@example.com",
        "phone": f"+1-555-{c % 1000:03d}-{(c * 7919) % 10000:04d}",
        "address": {"city": city, "postcode": postcode, "country": country},
        "tier": ("standard", "silver", "gold")[c % 3],
    }


def order_placed(i: int, customers: int = 1000) -> dict[str, Any]:
    """The ``data`` of the i-th OrderPlaced event."""
    items = []
    for j in range(3):
        sku, name, price = _PRODUCTS[(i * 3 + j) % len(_PRODUCTS)]
        items.append({"sku": sku, "name": name, "quantity": 1 + (i + j) % 3, "unit_price": price})
    subtotal = sum(it["quantity"] * it["unit_price"] for it in items)
    tax = subtotal * 19 // 100
    shipping = 0 if subtotal > 5000 else 499
    total = subtotal + tax + shipping
    return {
        "order_id": f"ord-{i:010d}",
        "placed_at": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z",
        "customer": customer(i % customers),
        "items": items,
        "currency": "EUR",
        "totals": {"subtotal": subtotal, "tax": tax, "shipping": shipping, "total": total},
        "channel": ("web", "ios", "android", "store")[i % 4],
    }


def _str(max_length: int, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, **extra}


def _int(maximum: int, minimum: int = 0) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required if required is not None else list(props),
        "properties": props,
    }


_PII = {"x-eventward": {"class": "pii"}}

ORDER_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://schemas.example.com/shop/OrderPlaced/1",
    "title": EVENT_TYPE,
    **_obj(
        {
            "order_id": _str(32, pattern="^ord-[0-9]{10}$"),
            "placed_at": _str(40, format="date-time"),
            "customer": _obj(
                {
                    "id": _str(64, pattern="^cust-[0-9]{6}$", **{"x-eventward": {"subject": True, "public": True}}),
                    "name": _str(200, **_PII),
                    "email": _str(254, format="email", **_PII),
                    "phone": _str(32, pattern="^\\+[0-9][0-9 -]{4,30}$", **_PII),
                    "address": _obj(
                        {"city": _str(100), "postcode": _str(16), "country": _str(2, pattern="^[A-Z]{2}$")}
                    ),
                    "tier": {"type": "string", "enum": ["standard", "silver", "gold"]},
                },
                required=["id", "name", "email"],
            ),
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _obj(
                    {
                        "sku": _str(32, pattern="^SKU-[0-9]{4}$"),
                        "name": _str(200),
                        "quantity": _int(1000, 1),
                        "unit_price": _int(100_000_000),
                    }
                ),
            },
            "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "JPY"]},
            "totals": _obj(
                {
                    "subtotal": _int(10_000_000_000),
                    "tax": _int(10_000_000_000),
                    "shipping": _int(1_000_000),
                    "total": _int(10_000_000_000),
                }
            ),
            "channel": {"type": "string", "enum": ["web", "ios", "android", "store"]},
        }
    ),
}
