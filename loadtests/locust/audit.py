#!/usr/bin/env python3
"""Audit a flashsale locust run: the invariants, checked through the API and the database.

  audit.py --records RECORDS.json --base-url http://127.0.0.1:18181
           (--database-url URL | --data-dir DIR) [--self-test]

RECORDS.json is what locustfile.py wrote at test_stop (FLASHSALE_RECORDS): the stores and
products it created and every checkout request with the answer the client got.

Checks (each prints PASS or FAIL; exit status 1 if any fails, 2 on a usage/connection error):
  oversell/db       every product: stock_available >= 0 and
                    sum(quantity of reserved+confirmed orders) + stock_available == stock_total
  oversell/api      every product of the run: GET /api/v1/products/{id} agrees with the database
                    (stock_total, stock_available; retried for the advertised max-age)
  oversell/clients  per product: units of the distinct orders clients got a 201 for <= stock_total
  lost-orders       every order id a client got a 201 for exists in the database, with the
                    client's store, product, idempotency key and quantity
  double-purchase   at most one order per (store_id, idempotency_key) in the database; per key
                    every 201 carried the same order id, and it is the database's order for the key;
                    no replay violation was seen by the clients
  ghost-orders      every database order of the run's stores belongs to a key whose client got a
                    201, or whose outcome the client never learned (no answer, 5xx, in progress);
                    no key that was refused (sold_out, ...) has an order

The private PostgreSQL of a server started without DATABASE_URL is found from its data dir:
<dir>/pgdata/postmaster.pid line 4 is the port, <dir>/password the password, user postgres,
database flashsale, on 127.0.0.1.

--self-test then re-runs the record checks on doctored copies of the records (a 201 for an
order id that does not exist; a replay that returned another order id; a refused key that
has an order) and fails unless each one is caught: proof that the audit can fail.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict

try:
    import psycopg
except ImportError:  # pragma: no cover - run.sh installs it
    psycopg = None

LIVE = ("reserved", "confirmed")
# Answers after which the client does not know whether its key bought.
UNKNOWN_CODES = {"idempotency_in_progress"}
# Answers that say nothing about this request's own outcome (the original request decides).
NEUTRAL_CODES = {"idempotency_key_reused"}
# Refusals that mean "this key bought nothing" (and the same for any later replay). Request-level
# refusals (400, 401, 403, 413, 429, 503) say nothing about the key and are not counted.
REFUSAL_STATUSES = {404, 409, 422}


class Audit:
    def __init__(self, quiet=False):
        self.failures: list[str] = []
        self.quiet = quiet

    def result(self, name: str, ok: bool, detail: str, problems=()):
        problems = list(problems)
        if not ok:
            self.failures.append(name)
        if not self.quiet:
            print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")
            for p in problems[:20]:
                print(f"         - {p}")
            if len(problems) > 20:
                print(f"         ... and {len(problems) - 20} more")


# ----------------------------------------------------------------- database ----
def db_connect(args):
    if psycopg is None:
        sys.exit("audit: psycopg is not installed (pip install -r loadtests/locust/requirements.txt)")
    if args.database_url:
        return psycopg.connect(args.database_url, connect_timeout=10)
    if not args.data_dir:
        sys.exit("audit: give --database-url or --data-dir")
    pidfile = os.path.join(args.data_dir, "pgdata", "postmaster.pid")
    try:
        lines = open(pidfile).read().splitlines()
        port = int(lines[3])
        password = open(os.path.join(args.data_dir, "password")).read().strip()
    except (OSError, IndexError, ValueError) as e:
        sys.exit(f"audit: cannot find the private PostgreSQL in {args.data_dir}: {e}")
    host = lines[5].strip() if len(lines) > 5 and lines[5].strip() not in ("", "*", "0.0.0.0") else "127.0.0.1"
    host = host.split()[0]
    return psycopg.connect(host=host, port=port, user="postgres", password=password, dbname="flashsale",
                           connect_timeout=10)


def db_snapshot(conn, store_ids):
    """Products and orders, read in one REPEATABLE READ snapshot."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute(
                """SELECT p.id, p.store_id, p.stock_total, p.stock_available,
                          COALESCE(SUM(o.quantity) FILTER (WHERE o.status IN ('reserved','confirmed')), 0),
                          COUNT(o.id)
                     FROM products p LEFT JOIN orders o ON o.product_id = p.id
                    GROUP BY p.id, p.store_id, p.stock_total, p.stock_available"""
            )
            products = {r[0]: {"store_id": r[1], "stock_total": r[2], "stock_available": r[3],
                               "sold": int(r[4]), "orders": r[5]} for r in cur.fetchall()}
            cur.execute(
                """SELECT store_id, idempotency_key, count(*) FROM orders
                    GROUP BY 1, 2 HAVING count(*) > 1"""
            )
            dup_keys = cur.fetchall()
            cur.execute(
                """SELECT id, store_id, product_id, idempotency_key, quantity, status, customer_id
                     FROM orders WHERE store_id = ANY(%s)""",
                (list(store_ids),),
            )
            orders = {r[0]: {"store_id": r[1], "product_id": r[2], "key": r[3], "quantity": r[4],
                             "status": r[5], "customer_id": r[6]} for r in cur.fetchall()}
    return products, dup_keys, orders


def dangling_references(conn):
    """Rows of the write-behind tables whose parent is missing (these tables carry no
    foreign keys, see migrations/V8): orders without their product in their store, audit
    and outbox rows without their order, orders without exactly one order.created event
    (a batch's outbox row lists its orders, see migrations/V12)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT 'order ' || o.id || ': no product ' || o.product_id || ' in store ' || o.store_id
                 FROM orders o
                WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = o.product_id AND p.store_id = o.store_id)
               UNION ALL
               SELECT 'audit row ' || a.id || ': no order ' || a.order_id
                 FROM order_audit a WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = a.order_id)
               UNION ALL
               SELECT 'order ' || o.id || ': ' || coalesce(e.n, 0) || ' order.created events'
                 FROM orders o
                 LEFT JOIN (SELECT subject_id, count(*) AS n FROM events
                             WHERE type = 'order.created' GROUP BY subject_id) e ON e.subject_id = o.id
                WHERE e.n IS DISTINCT FROM 1
               UNION ALL
               SELECT 'outbox row ' || e.id || ': no order ' || u.id
                 FROM outbox_events e, unnest(e.order_ids) AS u(id)
                WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = u.id)
               UNION ALL
               SELECT 'outbox event ' || e.id || ': no ' || split_part(e.type, '.', 1) || ' ' || e.subject_id
                 FROM outbox_events e
                WHERE (e.order_ids IS NULL AND e.type LIKE 'order.%'
                       AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = e.subject_id))
                   OR (e.type LIKE 'product.%' AND NOT EXISTS (SELECT 1 FROM products p WHERE p.id = e.subject_id))
                   OR NOT EXISTS (SELECT 1 FROM stores s WHERE s.id = e.store_id)
                LIMIT 50"""
        )
        return [r[0] for r in cur.fetchall()]


# ---------------------------------------------------------------------- API ----
def api_get(base, path, token):
    req = urllib.request.Request(base.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


# ------------------------------------------------------------------- checks ----
def check_oversell_db(audit, products, run_products):
    problems = []
    for pid, p in sorted(products.items()):
        if p["stock_available"] < 0:
            problems.append(f"{pid}: stock_available {p['stock_available']} < 0")
        if p["sold"] + p["stock_available"] != p["stock_total"]:
            problems.append(f"{pid}: sold {p['sold']} + available {p['stock_available']} != total {p['stock_total']}")
    ours = [products[pid] for pid in run_products if pid in products]
    missing = [pid for pid in run_products if pid not in products]
    problems += [f"{pid}: product of the run not in the database" for pid in missing]
    sold = sum(p["sold"] for p in ours)
    total = sum(p["stock_total"] for p in ours)
    audit.result("oversell/db", not problems,
                 f"{len(products)} product(s) in the database; the run's {len(ours)}: "
                 f"{sold} of {total} unit(s) sold, {total - sold} available", problems)


def check_oversell_api(audit, base, products, stores, wait_s):
    problems = []
    deadline = time.time() + wait_s
    checked = 0
    for st in stores:
        for prod in st["products"]:
            pid = prod["id"]
            db = products.get(pid)
            if db is None:
                continue
            checked += 1
            while True:
                status, doc = api_get(base, f"/api/v1/products/{pid}", st["storefront"])
                s2, stock = api_get(base, f"/api/v1/products/{pid}/stock", st["storefront"])
                why = None
                if status != 200 or not isinstance(doc, dict):
                    why = f"GET product -> {status} {doc if status == 0 else ''}"
                elif s2 != 200 or not isinstance(stock, dict):
                    why = f"GET stock -> {s2}"
                elif doc.get("stock_total") != db["stock_total"] or doc.get("stock_available") != db["stock_available"]:
                    why = (f"API total/available {doc.get('stock_total')}/{doc.get('stock_available')} != "
                           f"database {db['stock_total']}/{db['stock_available']}")
                elif stock.get("stock_available") != db["stock_available"]:
                    why = f"/stock available {stock.get('stock_available')} != database {db['stock_available']}"
                elif doc["stock_available"] < 0 or doc["stock_total"] - doc["stock_available"] != db["sold"]:
                    why = f"API total-available {doc['stock_total'] - doc['stock_available']} != sold {db['sold']}"
                if why is None:
                    break
                if time.time() > deadline:
                    problems.append(f"{pid}: {why}")
                    break
                time.sleep(0.25)
    audit.result("oversell/api", not problems and checked > 0,
                 f"{checked} product(s): the API's stock_total/stock_available agree with the database",
                 problems or ([] if checked else ["no product of the run was checked"]))


def key_outcomes(requests_):
    """Group the checkout records per (store_id, key)."""
    by_key = defaultdict(list)
    for r in requests_:
        by_key[(r["store_id"], r["key"])].append(r)
    return by_key


def is_unknown(r):
    s = r.get("status")
    return s is None or s == 0 or s >= 500 or r.get("code") in UNKNOWN_CODES


def is_refusal(r):
    s = r.get("status")
    return s in REFUSAL_STATUSES and r.get("code") not in UNKNOWN_CODES | NEUTRAL_CODES


def check_records(audit, records, orders, dup_keys, products):
    reqs = records.get("requests", [])
    run_products = {p["id"]: p for st in records.get("stores", []) for p in st["products"]}
    by_key = key_outcomes(reqs)
    acked = {}  # order id -> a record with a 201 for it
    for r in reqs:
        if r.get("status") == 201 and r.get("order_id"):
            acked.setdefault(r["order_id"], r)

    # oversell as the clients saw it
    problems = []
    units = defaultdict(int)
    for oid, r in acked.items():
        units[r["product_id"]] += r["quantity"]
    for pid, n in sorted(units.items()):
        total = (products.get(pid) or {}).get("stock_total", run_products.get(pid, {}).get("stock"))
        if total is not None and n > total:
            problems.append(f"{pid}: clients got 201s for {n} unit(s), stock_total is {total}")
    audit.result("oversell/clients", not problems,
                 f"{len(acked)} distinct order(s) acknowledged for {sum(units.values())} unit(s)", problems)

    # no lost order
    problems = []
    for oid, r in sorted(acked.items()):
        o = orders.get(oid)
        if o is None:
            problems.append(f"order {oid} (key {r['key']}, store {r['store_id']}) got a 201 but is not in the database")
            continue
        diffs = [f for f, rf in (("store_id", "store_id"), ("product_id", "product_id"), ("key", "key"),
                                 ("quantity", "quantity"), ("customer_id", "customer_id")) if o[f] != r[rf]]
        if diffs:
            problems.append(f"order {oid}: database {', '.join(diffs)} differ from what the client sent")
        if o["status"] not in LIVE + ("expired",):
            problems.append(f"order {oid}: status {o['status']} in the database")
    audit.result("lost-orders", not problems,
                 f"{len(acked) - len(problems)} of {len(acked)} acknowledged order(s) found in the database as sent",
                 problems)

    # no double purchase
    problems = [f"store {s} key {k}: {n} orders in the database" for s, k, n in dup_keys]
    db_by_key = {(o["store_id"], o["key"]): oid for oid, o in orders.items()}
    replays = 0
    for (store, key), rs in sorted(by_key.items()):
        ids = {r["order_id"] for r in rs if r.get("status") == 201}
        if len(rs) > 1:
            replays += len(rs) - 1
        if len(ids) > 1:
            problems.append(f"store {store} key {key}: clients got {len(ids)} different order ids {sorted(ids)}")
        elif ids:
            (oid,) = ids
            db_oid = db_by_key.get((store, key))
            if db_oid is not None and db_oid != oid:
                problems.append(f"store {store} key {key}: clients got {oid}, the database has {db_oid}")
    for v in records.get("violations", []):
        problems.append(f"client saw: {v.get('kind')}: {v.get('detail')}")
    audit.result("double-purchase", not problems,
                 f"{len(dup_keys)} duplicate (store_id, idempotency_key) in the database; {len(by_key)} key(s), "
                 f"{replays} replay(s); {len(records.get('violations', []))} client-side violation(s)", problems)

    # ghost orders
    problems = []
    unknown_keys = 0
    for oid, o in sorted(orders.items()):
        if o["product_id"] not in run_products:
            continue
        rs = by_key.get((o["store_id"], o["key"]))
        if not rs:
            problems.append(f"order {oid} (key {o['key']}) in the database, but no client sent that key")
            continue
        if any(r.get("status") == 201 for r in rs):
            continue
        if any(is_unknown(r) for r in rs):
            unknown_keys += 1
            if any(is_refusal(r) for r in rs):
                problems.append(f"order {oid} (key {o['key']}): a client was refused "
                                f"({sorted({(r['status'], r.get('code')) for r in rs if is_refusal(r)})}) but it exists")
            continue
        problems.append(f"order {oid} (key {o['key']}) in the database, but its client(s) got only "
                        f"{sorted({(r['status'], r.get('code')) for r in rs})}")
    audit.result("ghost-orders", not problems,
                 f"{len([o for o in orders.values() if o['product_id'] in run_products])} order(s) of the run in the "
                 f"database; {unknown_keys} of them for keys whose client never learned the outcome", problems)


# ---------------------------------------------------------------- self-test ----
def self_test(records, orders, dup_keys, products):
    """Doctor the records three ways; each must make the record checks fail."""
    ok = True
    reqs = records.get("requests", [])
    template = next((r for r in reqs if r.get("status") == 201), None)
    store = records["stores"][0]
    product = store["products"][0]
    if template is None:
        template = {"kind": "selftest", "store_id": store["id"], "product_id": product["id"], "key": "k",
                    "quantity": 1, "customer_id": "c", "status": 201, "code": None, "order_id": None,
                    "replayed": False, "t": time.time()}
    cases = []
    # 1. a lost order: a 201 for an order id the database does not have
    lost = copy.deepcopy(records)
    lost["requests"].append({**template, "key": "selftest-lost", "order_id": "ord_selftest_does_not_exist",
                             "status": 201})
    cases.append(("a 201 for an order id missing from the database", lost, "lost-orders"))
    # 2. a replay that returned another order id
    dup = copy.deepcopy(records)
    if any(r.get("status") == 201 for r in reqs):
        dup["requests"].append({**template, "order_id": template["order_id"] + "_other", "replayed": True})
        cases.append(("a replay with another order id", dup, "double-purchase"))
    # 3. a refused key that has an order in the database
    if template.get("order_id") in orders:
        ghost = copy.deepcopy(records)
        for r in ghost["requests"]:
            if r["store_id"] == template["store_id"] and r["key"] == template["key"]:
                r.update(status=409, code="sold_out", order_id=None)
        cases.append(("a refused key with an order in the database", ghost, "ghost-orders"))
    for what, doctored, expected in cases:
        a = Audit(quiet=True)
        check_records(a, doctored, orders, dup_keys, products)
        caught = expected in a.failures
        ok &= caught
        print(f"[{'PASS' if caught else 'FAIL'}] self-test: {what} is caught by {expected}: "
              f"{'yes' if caught else 'NO'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--base-url", default="http://127.0.0.1:18181")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    ap.add_argument("--data-dir")
    ap.add_argument("--api-wait", type=float, default=5.0,
                    help="seconds to let the API's cached stock catch up with the database")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()

    try:
        records = json.load(open(args.records))
    except (OSError, ValueError) as e:
        print(f"[FAIL] records: cannot read {args.records}: {e}")
        return 1
    if records.get("setup_failed"):
        print(f"[FAIL] setup: the locust setup failed: {records['setup_failed']}")
        return 1
    stores = records.get("stores", [])
    if not stores:
        print("[FAIL] records: no store was set up")
        return 1
    reqs = records.get("requests", [])
    by_status = defaultdict(int)
    for r in reqs:
        by_status[f"{r.get('status')}{' ' + r['code'] if r.get('code') else ''}"] += 1
    print(f"audit of scenario {records.get('scenario')}: {len(stores)} store(s), "
          f"{sum(len(s['products']) for s in stores)} product(s), {len(reqs)} checkout request(s)")
    print("  answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(by_status.items(), key=lambda kv: -kv[1])))

    try:
        conn = db_connect(args)
    except Exception as e:  # noqa: BLE001
        print(f"[FAIL] database: cannot connect: {e}")
        return 2
    with conn:
        products, dup_keys, orders = db_snapshot(conn, [s["id"] for s in stores])
        dangling = dangling_references(conn)

    audit = Audit()
    run_products = [p["id"] for s in stores for p in s["products"]]
    check_oversell_db(audit, products, run_products)
    check_oversell_api(audit, args.base_url, products, stores, args.api_wait)
    check_records(audit, records, orders, dup_keys, products)
    audit.result("references", not dangling,
                 f"{len(dangling)} row(s) of orders/order_audit/outbox_events without their parent", dangling)
    ok = not audit.failures
    if args.self_test:
        ok &= self_test(records, orders, dup_keys, products)
    print(f"audit: {'PASSED' if ok else 'FAILED'}"
          + (f" ({', '.join(audit.failures)})" if audit.failures else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
