#!/usr/bin/env python3
"""Resident memory per product: N products, each read once, then left idle.

    loadtests/memory.sh [N]        (N default 20000; see memory.sh)

Against a running flashsale (BASE, OPERATOR token, PID of the server in the environment):
creates a store and N products (through the API, or with SEED=sql in one INSERT through
psql on DB_URL, which is what makes N = 1,000,000 practical), reads each product page
once over HTTP (a 503 `overloaded` is retried until the page is read), and prints VmRSS
of the server: after the creates (baseline), right after the reads, and after the idle
time (products compacted or passivated), with the cost per product, the extrapolation
to 1,000,000 products, and the peak (VmHWM) of the whole run.
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

BASE = urlparse(os.environ["BASE"])
OPERATOR = os.environ["OPERATOR"]
PID = int(os.environ["PID"])
IDLE = float(os.environ.get("IDLE_WAIT", "40"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
SEED = os.environ.get("SEED", "api")
THREADS = 8


def status_kib(field):
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field}")


def rss_kib():
    return status_kib("VmRSS")


def connection():
    return http.client.HTTPConnection(BASE.hostname, BASE.port, timeout=30)


def call(conn, method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data


def in_parallel(work, items):
    """Runs work(conn, item) for every item on THREADS keep-alive connections."""
    chunks = [items[i::THREADS] for i in range(THREADS)]
    results = [None] * THREADS

    def run(i):
        conn = connection()
        out = []
        for item in chunks[i]:
            out.append(work(conn, item))
        results[i] = out

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for chunk in results for r in chunk]


def main():
    conn = connection()
    status, body = call(conn, "POST", "/api/v1/stores", OPERATOR, {"name": "Memory", "plan": "enterprise"})
    assert status == 201, body
    store = json.loads(body)
    admin, front = store["api_keys"]["admin"], store["api_keys"]["storefront"]

    def create(conn, i):
        status, body = call(conn, "POST", "/api/v1/products", admin, {
            "sku": f"mem-{i}", "name": f"Product {i}", "price_cents": 1000 + i,
            "currency": "EUR", "stock": 100, "description": "A product of the memory test catalog."})
        assert status == 201, body
        return json.loads(body)["id"]

    started = time.time()
    if SEED == "sql":
        ids = seed_sql(store["id"])
    else:
        ids = in_parallel(create, list(range(N)))
    print(f"created {N} products ({SEED}) in {time.time() - started:.1f} s")
    time.sleep(2)
    base = rss_kib()

    def read(conn, pid):
        retries = 0
        while True:
            status, body = call(conn, "GET", f"/api/v1/products/{pid}", front)
            if status != 503:
                break
            retries += 1
            time.sleep(0.05)
        assert status == 200, body
        return retries

    started = time.time()
    retried = sum(in_parallel(read, ids))
    print(f"read {N} products once in {time.time() - started:.1f} s "
          f"({retried} reads answered 503 first and were retried)")
    time.sleep(1)
    active = rss_kib()
    print(f"waiting {IDLE:.0f} s for the idle products to compact or passivate")
    time.sleep(IDLE)
    idle = rss_kib()
    status, metrics = call(connection(), "GET", "/metrics", OPERATOR)
    for line in metrics.decode().splitlines():
        if line.startswith(("flashsale_product_actors ", "flashsale_product_passivations_total ",
                            "flashsale_product_compactions_total ")):
            print(line)

    per_active = (active - base) * 1024 / N
    per_idle = (idle - base) * 1024 / N
    print(f"VmRSS baseline {base / 1024:.1f} MiB, right after the reads {active / 1024:.1f} MiB, "
          f"settled (compacted or passivated) {idle / 1024:.1f} MiB")
    print(f"per product: right after the reads {per_active:.0f} B, settled {per_idle:.0f} B")
    print(f"peak VmRSS of the run (VmHWM) {status_kib('VmHWM') / 1024:.1f} MiB")
    print(f"extrapolated to 1,000,000 products: right after the reads {base / 1024 + per_active * 1e6 / 2**20:.0f} MiB, "
          f"settled {base / 1024 + per_idle * 1e6 / 2**20:.0f} MiB")


def seed_sql(store_id):
    """N products of `store_id` in one INSERT (ids the API's shape: prd_ + 32 hex)."""
    sql = f"""
        INSERT INTO products (id, store_id, sku, name, description, price_cents, currency,
                              stock_total, stock_available)
        SELECT 'prd_' || lpad(to_hex(i), 32, '0'), '{store_id}', 'mem-' || i,
               'Product ' || i, 'A product of the memory test catalog.', 1000 + i, 'EUR',
               100, 100
        FROM generate_series(1, {N}) AS i"""
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", os.environ["DB_URL"], "-c", sql],
                   check=True)
    return [f"prd_{i:032x}" for i in range(1, N + 1)]


main()
