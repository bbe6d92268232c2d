#!/usr/bin/env python3
"""A short workload that gives every dashboard panel something to show.

    python3 grafana/live_workload.py BASE_URL OPERATOR_TOKEN [SECONDS]

Run by grafana/live_check.sh against a fresh flashsale. Python's standard library only
(a fresh CI machine has python3 and nothing more). It exercises what the panels plot:
checkouts of every common outcome (created, replayed, sold_out, rate_limited, and the
4xx refusals), a sell-out, payment holds confirmed, cancelled and left to expire,
product reads with 304 revalidations, listings, the drop calendar, the waiting room,
401/403/404/405/422/429 answers, webhook deliveries (where the server has webhooks: to
a receiver here that answers 200, 500 and 410); then SECONDS (default 6) of mixed traffic, so that the
rates over the last few scrapes are not zero when the queries are evaluated. It checks
only the answers that prove a step happened (a 201 where one is due), and exits 1 if
one is missing, so that a broken server fails here and not as a puzzling empty panel.
"""

import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

BASE = urllib.parse.urlsplit(sys.argv[1])
OPERATOR = sys.argv[2]
MIX_SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 6.0
CONSENT = {"terms_version": "2026-01", "marketing": False}
EVENTS = ["order.created", "order.confirmed", "order.cancelled", "order.expired",
          "product.sold_out", "product.restocked", "drop.live"]
local = threading.local()
failures = []


def request(method, path, token=None, body=None, headers=None, retry=True):
    """One request on this thread's keep-alive connection: (status, headers, json|None)."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(BASE.hostname, BASE.port, timeout=30)
    head = dict(headers or {})
    if token:
        head["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=head)
        response = conn.getresponse()
        raw = response.read()
    except (http.client.HTTPException, OSError):
        local.conn = None  # the server closed it: reconnect once
        conn.close()
        if not retry:
            raise
        return request(method, path, token, body, headers, retry=False)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed


def expect(what, got, *wanted):
    if got[0] not in wanted:
        failures.append(f"{what}: got {got[0]} {got[2]}, wanted {' or '.join(map(str, wanted))}")
    return got


def create_store(name, plan):
    _, _, body = expect(f"create store {name}", request(
        "POST", "/api/v1/stores", OPERATOR, {"name": name, "plan": plan}), 201)
    return body["api_keys"]["admin"], body["api_keys"]["storefront"]


def create_product(admin, sku, stock, **extra):
    body = {"sku": sku, "name": f"Live check {sku}", "price_cents": 4900,
            "currency": "EUR", "stock": stock, **extra}
    _, _, product = expect(f"create product {sku}", request(
        "POST", "/api/v1/products", admin, body), 201)
    return product["id"]


def checkout(token, key, product, customer, quantity=1, headers=None):
    body = {"product_id": product, "quantity": quantity, "customer_id": customer,
            "consent": CONSENT}
    return request("POST", "/api/v1/checkout", token, body,
                   {"Idempotency-Key": key, **(headers or {})})


def iso(delta_seconds):
    moment = datetime.now(timezone.utc) + timedelta(seconds=delta_seconds)
    return moment.isoformat().replace("+00:00", "Z")


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: /ok answers 200, /fail 500 (retried, then failed), /gone 410."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response({"/ok": 200, "/fail": 500, "/gone": 410}.get(self.path, 404))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def webhooks():
    """Where the server has webhooks: endpoints that succeed, fail and go away, so that
    the delivery panels have each outcome. Skipped where /api/v1/webhooks is not served."""
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{receiver.server_address[1]}"
    rare = ["product.sold_out", "product.restocked", "order.cancelled"]
    for path, events in (("/ok", EVENTS), ("/fail", rare), ("/gone", rare)):
        status, _, body = request("POST", "/api/v1/webhooks", ADMIN,
                                  {"url": base + path, "events": events})
        if status == 404:
            print("live_workload: no /api/v1/webhooks here: webhooks skipped")
            return
        if status != 201:
            failures.append(f"webhook {path}: got {status} {body}, wanted 201")


def sell_out(front, pool):
    """40 buyers at once for 30 units: a batched stampede, a sell-out, sold-out refusals."""
    product = create_product(ADMIN, "drop", 30)
    answers = list(pool.map(
        lambda i: checkout(front, f"drop-{i}", product, f"buyer-{i}"), range(40)))
    created = [a for a in answers if a[0] == 201]
    if len(created) != 30:
        failures.append(f"sell-out: {len(created)} of 30 units sold, answers "
                        f"{sorted(a[0] for a in answers)}")
    expect("checkout after the sell-out", checkout(front, "late", product, "late"), 409)
    # The same key and body again is a replay; the same key with another body is refused.
    expect("replay", checkout(front, "drop-0", product, "buyer-0"), 201)
    expect("key reused", checkout(front, "drop-0", product, "buyer-0", quantity=2), 422)
    return product


def holds(front):
    """Payment holds: one confirmed, one cancelled, two left to expire (1 s hold)."""
    product = create_product(ADMIN, "hold", 20, hold_seconds=1)
    orders = []
    for i in range(4):
        _, _, order = expect("hold checkout", checkout(
            front, f"hold-{i}", product, f"holder-{i}"), 201)
        orders.append(order["id"])
    expect("confirm", request("POST", f"/api/v1/orders/{orders[0]}/confirm", ADMIN,
                              {"payment_reference": "pay-1"}), 200)
    expect("cancel", request("POST", f"/api/v1/orders/{orders[1]}/cancel", ADMIN, {}), 200)
    return product, orders


def waiting_room(front):
    """A drop with a waiting room opening in 2 s: queue, get admitted, buy with the token."""
    room = {"opens_seconds_before": 60, "admit_per_second": 50}
    product = create_product(ADMIN, "queued", 10, sale_starts_at=iso(2), waiting_room=room)
    queue = f"/api/v1/products/{product}/queue"
    _, _, ticket = expect("join queue", request(
        "POST", queue, front, {"customer_id": "queuer"}), 202)
    expect("checkout before the sale", checkout(front, "q-early", product, "queuer"), 409)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, _, status = request("GET", f"{queue}/{ticket['ticket']}", front)
        if status and status.get("token"):
            expect("admitted checkout", checkout(
                front, "q-in", product, "queuer",
                headers={"Waiting-Room-Token": status["token"]}), 201)
            return
        time.sleep(0.3)
    failures.append("waiting room: never admitted within 10 s")


def reads(front, product, order):
    """Product reads (200 then 304), stock, listings, drops, orders; and refusals."""
    _, head, _ = expect("product", request("GET", f"/api/v1/products/{product}", front), 200)
    expect("revalidate", request("GET", f"/api/v1/products/{product}", front,
                                 headers={"If-None-Match": head.get("etag", "")}), 304)
    expect("stock", request("GET", f"/api/v1/products/{product}/stock", front), 200)
    expect("listing", request("GET", "/api/v1/products?limit=5", front), 200)
    expect("drops", request("GET", f"/api/v1/drops?from={iso(-3600)}&to={iso(3600)}",
                            front), 200)
    expect("orders", request("GET", "/api/v1/orders?limit=5", ADMIN), 200)
    expect("order", request("GET", f"/api/v1/orders/{order}", front), 200)
    expect("restock", request("POST", f"/api/v1/products/{product}/restock", ADMIN,
                              {"quantity": 5}), 200)
    expect("patch", request("PATCH", f"/api/v1/products/{product}", ADMIN,
                            {"name": "Live check, renamed"}), 200)
    expect("unknown token", request("GET", "/api/v1/products", "sk_nope"), 401)
    expect("storefront writes", request("POST", f"/api/v1/products/{product}/restock",
                                        front, {"quantity": 1}), 403)
    expect("unknown product", request("GET", "/api/v1/products/prd_nope", front), 404)
    expect("wrong method", request("DELETE", "/api/v1/checkout", front), 405)
    expect("no idempotency key", request("POST", "/api/v1/checkout", front, {}), 400)
    expect("bad body", request("POST", "/api/v1/checkout", front, b"{",
                               {"Idempotency-Key": "bad"}), 400)
    expect("bad quantity", checkout(front, "bad-qty", product, "x", quantity=0), 422)
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        expect(path, request("GET", path), 200)


def rate_limits(pool, product):
    """429s: a free store over its request rate, a customer over its checkout rate."""
    _, free_front = create_store("Live check free", "free")
    answers = list(pool.map(lambda _: request("GET", "/api/v1/products", free_front)[0],
                            range(60)))
    if 429 not in answers:
        failures.append(f"free store: no 429 in 60 quick reads ({sorted(set(answers))})")
    answers = [checkout(FRONT, f"greedy-{i}", product, "greedy")[0] for i in range(12)]
    if 429 not in answers:
        failures.append(f"customer rate: no 429 in 12 checkouts ({sorted(set(answers))})")


def mix(pool, product, sold_out, seconds):
    """Steady traffic until the end, so the last scrapes see every rate move."""
    end = time.monotonic() + seconds
    count = 0

    def one(i):
        if i % 5 == 0:
            return checkout(FRONT, f"mix-{i}", product, f"mixer-{i}")
        if i % 5 == 1:
            return checkout(FRONT, f"mix-sold-{i}", sold_out, f"mixer-{i}")
        if i % 5 == 2:
            return checkout(FRONT, "drop-1", sold_out, "buyer-1")  # a replay
        return request("GET", f"/api/v1/products/{product}", FRONT)

    while time.monotonic() < end:
        list(pool.map(one, range(count, count + 20)))
        count += 20
        time.sleep(0.05)
    return count


def main():
    global ADMIN, FRONT
    started = time.monotonic()
    ADMIN, FRONT = create_store("Live check", "pro")
    webhooks()
    with ThreadPoolExecutor(max_workers=16) as pool:
        sold_out = sell_out(FRONT, pool)
        held, orders = holds(FRONT)
        waiting_room(FRONT)
        reads(FRONT, held, orders[0])
        big = create_product(ADMIN, "steady", 100000)
        rate_limits(pool, big)
        time.sleep(1.2)  # the two untouched holds (1 s) expire meanwhile
        expect("expired hold", request("POST", f"/api/v1/orders/{orders[2]}/confirm",
                                       ADMIN, {"payment_reference": "late"}), 409)
        sent = mix(pool, big, sold_out, MIX_SECONDS)
    print(f"live_workload: done in {time.monotonic() - started:.1f} s "
          f"({sent} requests in the final mix)")
    if failures:
        print("\n".join(f"live_workload: FAILED {f}" for f in failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
