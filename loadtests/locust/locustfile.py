"""Locust scenarios for flashsale (HTTP API: docs/API.md).

Pick one scenario with ``--scenario NAME`` or ``FLASHSALE_SCENARIO=NAME``:

  stampede     a hot drop: many one-shot buyers, one product with limited stock
  browse       browse-heavy: product reads, /stock, conditional GETs (304), few checkouts
  many_stores  many stores at once, each with its own product and keys
  retry_storm  clients retrying the same Idempotency-Key, in sequence and concurrently
  abusive      bad input and unknown tokens (4xx problem documents, never 5xx)

Setup runs in ``test_start`` with the operator token (``FLASHSALE_ADMIN_TOKEN``): it creates
the scenario's stores and products. Every checkout answer a client got (idempotency key,
status, order id, ...) is kept in memory and written at ``test_stop`` to the JSON file named
by ``FLASHSALE_RECORDS``; ``audit.py`` checks it against the database. ``run.sh`` does all
of that in one command.

Knobs (command line or environment): --scenario/FLASHSALE_SCENARIO,
--stock/FLASHSALE_STOCK (units per product; default depends on the scenario),
--stores/FLASHSALE_STORES (many_stores; default 20), FLASHSALE_ADMIN_TOKEN, FLASHSALE_RECORDS.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid

import gevent
import requests
from locust import FastHttpUser, between, constant, events, task
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

log = logging.getLogger("flashsale")

SCENARIOS = ("stampede", "browse", "many_stores", "retry_storm", "abusive")
DEFAULT_STOCK = {"stampede": 1000, "browse": 100000, "many_stores": 200, "retry_storm": 15000, "abusive": 10}
TERMS_VERSION = "2026-01"

# 409 answers that are a normal outcome of a checkout under load.
EXPECTED_409 = {"sold_out", "insufficient_stock"}
# Answers that say nothing about whether the key bought (the audit treats them as unknown).
UNKNOWN_CODES = {"idempotency_in_progress"}

# ------------------------------------------------------------------ module state ----
STATE: dict = {"ready": False, "failed": None, "scenario": None, "stores": []}
RECORDS: list[dict] = []  # one per checkout request a client sent
VIOLATIONS: list[dict] = []  # client-side invariant violations (replays, oversell, ...)


def _opt(environment, name, env, default=None):
    val = getattr(environment.parsed_options, name, None) if environment.parsed_options else None
    if val in (None, ""):
        val = os.environ.get(env, default)
    return val


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument(
        "--scenario",
        type=str,
        choices=SCENARIOS,
        env_var="FLASHSALE_SCENARIO",
        default="stampede",
        help="flashsale scenario to run: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--stock", type=int, env_var="FLASHSALE_STOCK", default=0,
        help="units of stock per product (0: the scenario's default)",
    )
    parser.add_argument(
        "--stores", type=int, env_var="FLASHSALE_STORES", default=20,
        help="stores created by the many_stores scenario",
    )


# ------------------------------------------------------------------------ helpers ----
def checkout_body(product_id: str, quantity: int, customer_id: str, marketing: bool = False) -> dict:
    return {
        "product_id": product_id,
        "quantity": quantity,
        "customer_id": customer_id,
        "consent": {"terms_version": TERMS_VERSION, "marketing": marketing},
    }


def parse_json(resp):
    try:
        return json.loads(resp.content or b"null")
    except (ValueError, TypeError):
        return None


def header(resp, name):
    try:
        return resp.headers.get(name) if resp.headers is not None else None
    except Exception:  # noqa: BLE001 - a broken response has no headers
        return None


def problem_code(resp):
    body = parse_json(resp)
    return body.get("code") if isinstance(body, dict) else None


def violation(environment, kind: str, detail: str, **extra):
    """A client-side invariant violation: kept for the audit and shown as a locust failure."""
    VIOLATIONS.append({"kind": kind, "detail": detail, "t": time.time(), **extra})
    environment.events.request.fire(
        request_type="CHECK", name=kind, response_time=0, response_length=0,
        exception=AssertionError(kind), context={},  # the detail (key, ids) goes to the records
    )


def check_passed(environment, kind: str):
    environment.events.request.fire(
        request_type="CHECK", name=kind, response_time=0, response_length=0, exception=None, context={},
    )


def new_record(store: dict, product_id: str, key: str, quantity: int, customer_id: str, kind: str) -> dict:
    rec = {
        "kind": kind,
        "store_id": store["id"],
        "product_id": product_id,
        "key": key,
        "quantity": quantity,
        "customer_id": customer_id,
        "status": None,  # None: sent, no answer (yet)
        "code": None,
        "order_id": None,
        "replayed": False,
        "t": time.time(),
    }
    RECORDS.append(rec)
    return rec


def do_checkout(user, store: dict, product: dict, key: str, body: dict, name: str, kind: str,
                ok_409=EXPECTED_409, allow_key_reused=False) -> dict:
    """POST /checkout and judge the answer. Returns the record (status/code/order_id filled)."""
    rec = new_record(store, body["product_id"], key, body["quantity"], body["customer_id"], kind)
    headers = {"Authorization": f"Bearer {store['storefront']}", "Idempotency-Key": key}
    with user.client.post("/api/v1/checkout", json=body, headers=headers, name=name, catch_response=True) as r:
        rec["status"] = r.status_code or 0
        rec["replayed"] = (header(r, "Idempotent-Replayed") or "").lower() == "true"
        doc = parse_json(r)
        if r.status_code == 201:
            if not isinstance(doc, dict) or not doc.get("id"):
                r.failure("201 without an order id")
                return rec
            rec["order_id"] = doc["id"]
            problems = []
            if doc.get("quantity") != body["quantity"]:
                problems.append(f"quantity {doc.get('quantity')} != {body['quantity']}")
            if doc.get("product_id") != body["product_id"]:
                problems.append("product_id differs")
            if doc.get("store_id") != store["id"]:
                problems.append("store_id differs")
            if doc.get("status") not in ("reserved", "confirmed"):
                problems.append(f"status {doc.get('status')!r}")
            if problems:
                r.failure("201 order does not match the request: " + "; ".join(problems))
            else:
                r.success()
            return rec
        code = doc.get("code") if isinstance(doc, dict) else None
        rec["code"] = code
        if r.status_code == 409 and code in ok_409:
            r.success()
        elif r.status_code == 409 and code == "idempotency_in_progress" and kind.startswith("retry"):
            r.success()
        elif r.status_code == 422 and code == "idempotency_key_reused" and allow_key_reused:
            r.success()
        elif r.status_code == 0:
            r.failure(f"no answer: {getattr(r, 'error', None)}")
        else:
            r.failure(f"unexpected {r.status_code} {code or (r.text or '')[:120]}")
    return rec


def _require_ready():
    if not STATE["ready"]:
        raise StopUser()


# ------------------------------------------------------------------------- setup ----
class SetupError(RuntimeError):
    pass


def _api(session: requests.Session, method: str, url: str, token: str, body=None, want=(200, 201)):
    r = session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if r.status_code not in want:
        raise SetupError(f"{method} {url} -> {r.status_code} {r.text[:300]}")
    return r.json()


def _create_store(session, host, admin_token, name) -> dict:
    st = _api(session, "POST", f"{host}/api/v1/stores", admin_token, {"name": name, "plan": "enterprise"})
    return {"id": st["id"], "name": st["name"], "admin": st["api_keys"]["admin"],
            "storefront": st["api_keys"]["storefront"], "products": []}


def _create_product(session, host, store, sku, stock, **extra) -> dict:
    body = {"sku": sku, "name": f"Load test {sku}", "price_cents": random.randint(100, 99999),
            "currency": "EUR", "stock": stock, **extra}
    p = _api(session, "POST", f"{host}/api/v1/products", store["admin"], body)
    prod = {"id": p["id"], "sku": p["sku"], "stock": p["stock_total"], "hold_seconds": p.get("hold_seconds", 0)}
    store["products"].append(prod)
    return prod


def setup_scenario(environment):
    host = (environment.host or "").rstrip("/")
    if not host:
        raise SetupError("no --host given")
    token = os.environ.get("FLASHSALE_ADMIN_TOKEN")
    if not token:
        raise SetupError("FLASHSALE_ADMIN_TOKEN is not set (the operator token)")
    scenario = _opt(environment, "scenario", "FLASHSALE_SCENARIO", "stampede")
    stock = int(_opt(environment, "stock", "FLASHSALE_STOCK", 0) or 0) or DEFAULT_STOCK[scenario]
    run = uuid.uuid4().hex[:8]
    stores: list[dict] = []
    with requests.Session() as s:
        if scenario == "many_stores":
            n = int(_opt(environment, "stores", "FLASHSALE_STORES", 20) or 20)
            for i in range(n):
                st = _create_store(s, host, token, f"locust-{scenario}-{run}-{i}")
                # Half the stores hold stock awaiting payment (reserved orders), half confirm at once.
                _create_product(s, host, st, f"drop-{run}-{i}", stock, hold_seconds=600 if i % 2 else 0)
                stores.append(st)
        else:
            st = _create_store(s, host, token, f"locust-{scenario}-{run}")
            if scenario == "browse":
                _create_product(s, host, st, f"hot-{run}", stock)
                for i in range(4):
                    _create_product(s, host, st, f"catalog-{run}-{i}", 1000)
            else:
                _create_product(s, host, st, f"{scenario}-{run}", stock)
            stores.append(st)
    STATE.update(scenario=scenario, stores=stores, host=host, ready=True, failed=None)
    log.info("flashsale setup for %s: %d store(s), %d product(s), %d unit(s) each", scenario, len(stores),
             sum(len(st["products"]) for st in stores), stock)


@events.init.add_listener
def _select_user_classes(environment, **_kw):
    """Keep only the user classes of the chosen scenario (unless classes were named explicitly)."""
    scenario = _opt(environment, "scenario", "FLASHSALE_SCENARIO", "stampede")
    if scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if environment.parsed_options is not None and getattr(environment.parsed_options, "user_classes", None):
        return
    wanted = [c for c in environment.user_classes if getattr(c, "scenario", None) == scenario]
    environment.user_classes[:] = wanted
    log.info("scenario %s: user classes %s", scenario, ", ".join(c.__name__ for c in wanted))


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    RECORDS.clear()
    VIOLATIONS.clear()
    STATE.update(ready=False, failed=None, stores=[])
    try:
        setup_scenario(environment)
    except Exception as e:  # noqa: BLE001 - any setup error stops the run
        STATE["failed"] = str(e)
        log.error("flashsale setup failed: %s", e)
        environment.process_exit_code = 3
        if environment.runner is not None:
            gevent.spawn_later(0.1, environment.runner.quit)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    path = os.environ.get("FLASHSALE_RECORDS")
    answered = sum(1 for r in RECORDS if r["status"] is not None)
    created = {r["order_id"] for r in RECORDS if r["status"] == 201}
    log.info("flashsale records: %d checkout requests (%d answered), %d distinct orders, %d violation(s)",
             len(RECORDS), answered, len(created), len(VIOLATIONS))
    if not path:
        log.info("FLASHSALE_RECORDS not set: records not written")
        return
    doc = {
        "scenario": STATE.get("scenario"),
        "host": STATE.get("host"),
        "setup_failed": STATE.get("failed"),
        "written_at": time.time(),
        "stores": STATE.get("stores", []),
        "requests": RECORDS,
        "violations": VIOLATIONS,
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    log.info("flashsale records written to %s", path)


# -------------------------------------------------------------------- scenarios ----
class GracefulUser(FastHttpUser):
    """A user that, with --stop-timeout, is never killed in the middle of a request.

    Locust kills a user that is in its wait_time at stop. But a user whose wait has just
    ended may already be sending its next request when the kill lands, and a request cut
    off like that leaves an order whose client never learned the outcome. Here a waiting
    user is only marked as stopping: it leaves at the end of its wait, before another task.
    """

    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0

    def stop(self, force: bool = False):
        if not force and self._state == LOCUST_STATE_WAITING:
            self._state = LOCUST_STATE_STOPPING
            return False
        return super().stop(force=force)


class StampedeBuyer(GracefulUser):
    """A hot drop: every buyer is new (fresh key, fresh customer), one product, limited stock."""

    scenario = "stampede"
    wait_time = between(0, 0.05)
    def on_start(self):
        _require_ready()
        self.store = STATE["stores"][0]
        self.product = self.store["products"][0]

    @task
    def buy(self):
        qty = 1 if random.random() < 0.8 else random.randint(2, 3)
        body = checkout_body(self.product["id"], qty, f"cust-{uuid.uuid4().hex}", random.random() < 0.3)
        do_checkout(self, self.store, self.product, f"stampede-{uuid.uuid4()}", body,
                    "/api/v1/checkout [stampede]", "stampede")


class Browser(GracefulUser):
    """Browse-heavy traffic: product pages, stock polling, conditional GETs, a few checkouts."""

    scenario = "browse"
    wait_time = between(0.05, 0.3)
    def on_start(self):
        _require_ready()
        self.store = STATE["stores"][0]
        self.auth = {"Authorization": f"Bearer {self.store['storefront']}"}
        self.etags: dict[str, str] = {}

    def _product(self):
        # The first product is the hot one; the catalog is read too but never bought.
        prods = self.store["products"]
        return prods[0] if random.random() < 0.5 else random.choice(prods)

    def _check_product(self, r, product):
        doc = parse_json(r)
        if not isinstance(doc, dict) or doc.get("id") != product["id"]:
            return "body is not the product"
        total, avail = doc.get("stock_total"), doc.get("stock_available")
        if not isinstance(total, int) or not isinstance(avail, int) or not 0 <= avail <= total:
            return f"bad stock numbers total={total} available={avail}"
        if not header(r, "ETag") or not header(r, "Cache-Control"):
            return "missing ETag or Cache-Control"
        return None

    @task(10)
    def view_product(self):
        p = self._product()
        with self.client.get(f"/api/v1/products/{p['id']}", headers=self.auth,
                             name="/api/v1/products/{id}", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"unexpected {r.status_code} {problem_code(r)}")
                return
            err = self._check_product(r, p)
            if err:
                r.failure(err)
                return
            self.etags[p["id"]] = header(r, "ETag")
            r.success()

    @task(8)
    def revalidate(self):
        p = self._product()
        tag = self.etags.get(p["id"])
        if not tag:
            return self.view_product()
        with self.client.get(f"/api/v1/products/{p['id']}", headers={**self.auth, "If-None-Match": tag},
                             name="/api/v1/products/{id} If-None-Match", catch_response=True) as r:
            if r.status_code == 304:
                if r.content:
                    r.failure("304 with a body")
                else:
                    r.success()
                    check_passed(self.environment, "If-None-Match: 304 not modified")
            elif r.status_code == 200:  # changed since: a new tag
                err = self._check_product(r, p)
                if err:
                    r.failure(err)
                else:
                    self.etags[p["id"]] = header(r, "ETag")
                    r.success()
                    check_passed(self.environment, "If-None-Match: 200 changed")
            else:
                r.failure(f"unexpected {r.status_code} {problem_code(r)}")

    @task(6)
    def poll_stock(self):
        p = self._product()
        with self.client.get(f"/api/v1/products/{p['id']}/stock", headers=self.auth,
                             name="/api/v1/products/{id}/stock", catch_response=True) as r:
            doc = parse_json(r)
            if r.status_code != 200:
                r.failure(f"unexpected {r.status_code} {problem_code(r)}")
            elif not isinstance(doc, dict) or not isinstance(doc.get("stock_available"), int) \
                    or doc["stock_available"] < 0 or "status" not in doc:
                r.failure(f"bad /stock body {str(doc)[:120]}")
            else:
                r.success()

    @task(2)
    def list_products(self):
        with self.client.get("/api/v1/products?limit=20&sort=-created_at", headers=self.auth,
                             name="/api/v1/products", catch_response=True) as r:
            doc = parse_json(r)
            if r.status_code != 200 or not isinstance(doc, dict) or "items" not in doc:
                r.failure(f"unexpected {r.status_code} {str(doc)[:120]}")
            else:
                r.success()

    @task(1)
    def buy(self):
        p = self.store["products"][0]
        body = checkout_body(p["id"], 1, f"cust-{uuid.uuid4().hex}")
        do_checkout(self, self.store, p, f"browse-{uuid.uuid4()}", body, "/api/v1/checkout [browse]", "browse")


class ManyStoresBuyer(GracefulUser):
    """Buyers spread across many stores at once, each store with its own product and keys."""

    scenario = "many_stores"
    wait_time = between(0, 0.1)
    def on_start(self):
        _require_ready()

    @task(10)
    def buy(self):
        st = random.choice(STATE["stores"])
        p = st["products"][0]
        body = checkout_body(p["id"], random.randint(1, 2), f"cust-{uuid.uuid4().hex}")
        do_checkout(self, st, p, f"ms-{uuid.uuid4()}", body, "/api/v1/checkout [many_stores]", "many_stores")

    @task(3)
    def stock(self):
        st = random.choice(STATE["stores"])
        p = st["products"][0]
        with self.client.get(f"/api/v1/products/{p['id']}/stock", headers={"Authorization": f"Bearer {st['storefront']}"},
                             name="/api/v1/products/{id}/stock", catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            else:
                r.failure(f"unexpected {r.status_code} {problem_code(r)}")

    @task(1)
    def foreign_product(self):
        """Tenant isolation: another store's product read with this store's key is a 404."""
        if len(STATE["stores"]) < 2:
            return
        mine, other = random.sample(STATE["stores"], 2)
        p = other["products"][0]
        with self.client.get(f"/api/v1/products/{p['id']}", headers={"Authorization": f"Bearer {mine['storefront']}"},
                             name="/api/v1/products/{id} [other store's key]", catch_response=True) as r:
            if r.status_code == 404:
                r.success()
            else:
                r.failure(f"expected 404 for another store's product, got {r.status_code}")


class RetryStormClient(GracefulUser):
    """Clients that retry the same Idempotency-Key (same body), in sequence and concurrently.

    Every replay must give the original answer: the same order id (or the same refusal) with
    ``Idempotent-Replayed: true``. A duplicate racing the original may instead get 409
    ``idempotency_in_progress``. The same key with another body must get 422
    ``idempotency_key_reused``. Violations are counted as locust failures (request type CHECK)
    and written to the records for the audit.
    """

    scenario = "retry_storm"
    wait_time = between(0, 0.1)
    def on_start(self):
        _require_ready()
        self.store = STATE["stores"][0]
        self.product = self.store["products"][0]

    def _send(self, key, body, label, kind="retry_storm", allow_key_reused=False):
        return do_checkout(self, self.store, self.product, key, body, f"/api/v1/checkout [{label}]", kind,
                           allow_key_reused=allow_key_reused)

    def _settle(self, key, body, results):
        """Retry until the key's first request is finished (no more idempotency_in_progress)."""
        for _ in range(20):
            rec = self._send(key, body, "retry_storm settle")
            results.append(rec)
            if rec["code"] != "idempotency_in_progress":
                return rec
            gevent.sleep(0.05)
        return None

    def _judge(self, key, results, must_replay=()):
        """All final answers for one key must agree (same status and code, same order id);
        the answers in ``must_replay`` (sent after an earlier answer had arrived) must carry
        ``Idempotent-Replayed: true``. Concurrent duplicates may be answered fresh with the
        same result, or with 409 idempotency_in_progress (API.md, Checkout)."""
        env = self.environment
        final = [r for r in results if r["status"] not in (None, 0) and r["status"] < 500
                 and r["code"] not in UNKNOWN_CODES]
        ok = True
        ids = {r["order_id"] for r in final if r["status"] == 201}
        if len(ids) > 1:
            ok = False
            violation(env, "replay returned another order id", f"key {key}: order ids {sorted(ids)}", key=key)
        kinds = {(r["status"], r["code"]) for r in final}
        if len(kinds) > 1:
            ok = False
            violation(env, "replay returned another answer", f"key {key}: answers {sorted(map(str, kinds))}", key=key)
        final_ids = {id(r) for r in final}
        unmarked = [r for r in must_replay if id(r) in final_ids and not r["replayed"]]
        if unmarked:
            ok = False
            violation(env, "replay without Idempotent-Replayed: true",
                      f"key {key}: {len(unmarked)} replay(s) of {sorted(map(str, kinds))} not marked as replayed",
                      key=key)
        if ok and len(final) >= 2:
            check_passed(env, "replay returned the original answer")

    @task(5)
    def sequential_retries(self):
        key = f"retry-seq-{uuid.uuid4()}"
        body = checkout_body(self.product["id"], 1, f"cust-{uuid.uuid4().hex}")
        results = []
        for i in range(random.randint(2, 5)):
            results.append(self._send(key, body, "retry_storm first" if i == 0 else "retry_storm replay"))
        # Every request after the first final answer (not 5xx, not in progress) is a replay.
        first = next((i for i, r in enumerate(results) if r["status"] not in (None, 0) and r["status"] < 500
                      and r["code"] not in UNKNOWN_CODES), len(results))
        self._judge(key, results, must_replay=results[first + 1:])

    @task(4)
    def concurrent_retries(self):
        key = f"retry-conc-{uuid.uuid4()}"
        body = checkout_body(self.product["id"], 1, f"cust-{uuid.uuid4().hex}")
        results: list[dict] = []
        n = random.randint(2, 6)
        jobs = [gevent.spawn(lambda: results.append(self._send(key, body, "retry_storm concurrent"))) for _ in range(n)]
        gevent.joinall(jobs, timeout=60)
        burst = len(results)
        self._settle(key, body, results)
        # The retries after the burst came back must be replays (the first answer exists by now).
        self._judge(key, results, must_replay=results[burst:])

    @task(1)
    def reused_key_other_body(self):
        key = f"retry-reuse-{uuid.uuid4()}"
        customer = f"cust-{uuid.uuid4().hex}"
        body = checkout_body(self.product["id"], 1, customer)
        first = self._send(key, body, "retry_storm first")
        if first["status"] in (None, 0) or first["status"] >= 500:
            return
        other = checkout_body(self.product["id"], 2, customer)
        rec = self._send(key, other, "retry_storm other body", kind="retry_storm_other_body", allow_key_reused=True)
        if rec["status"] == 422 and rec["code"] == "idempotency_key_reused":
            check_passed(self.environment, "same key, other body is refused")
        elif rec["status"] not in (None, 0):
            violation(self.environment, "same key, other body was not refused",
                      f"key {key}: got {rec['status']} {rec['code']}", key=key)
        # ...and the original answer still stands.
        again = self._send(key, body, "retry_storm replay")
        self._judge(key, [first, again], must_replay=[again])


class Abuser(GracefulUser):
    """One client hammering with bad input and unknown tokens.

    Every answer must be a 4xx problem document (``application/problem+json`` with ``status``
    and ``code``); 429 ``rate_limited`` (with ``Retry-After``) is fine; 2xx and 5xx are failures.
    """

    scenario = "abusive"
    wait_time = constant(0)
    def on_start(self):
        _require_ready()
        self.store = STATE["stores"][0]
        self.product = self.store["products"][0]
        self.pk = {"Authorization": f"Bearer {self.store['storefront']}"}

    def _expect(self, method, path, name, expected, headers=None, json_body=None, data=None):
        kw = {"headers": headers or {}, "name": name, "catch_response": True}
        if json_body is not None:
            kw["json"] = json_body
        if data is not None:
            kw["data"] = data
        with self.client.request(method, path, **kw) as r:
            status = r.status_code
            if status == 0:
                r.failure(f"no answer: {getattr(r, 'error', None)}")
                return
            if status >= 500:
                r.failure(f"{status} {problem_code(r)}: a server error on bad input")
                return
            if status < 400:
                r.failure(f"{status}: bad input was accepted (expected {sorted(expected)})")
                return
            if status == 429:
                if not header(r, "Retry-After"):
                    r.failure("429 without Retry-After")
                else:
                    r.success()
                return
            ctype = (header(r, "Content-Type") or "").split(";")[0].strip()
            doc = parse_json(r)
            if ctype != "application/problem+json" or not isinstance(doc, dict):
                r.failure(f"{status} is not a problem document (content-type {ctype!r})")
            elif doc.get("status") != status or not isinstance(doc.get("code"), str):
                r.failure(f"{status} problem document without matching status/code: {str(doc)[:120]}")
            elif status not in expected:
                r.failure(f"{status} {doc.get('code')}, expected {sorted(expected)}")
            else:
                r.success()

    def _ck(self, key=None, token=None):
        h = {"Authorization": f"Bearer {token or self.store['storefront']}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def _good_body(self):
        return checkout_body(self.product["id"], 1, f"abuser-{uuid.uuid4().hex[:8]}")

    @task(3)
    def unknown_token(self):
        tok = random.choice(["sk_" + uuid.uuid4().hex, "pk_" + uuid.uuid4().hex, uuid.uuid4().hex, "x" * 300])
        self._expect("GET", f"/api/v1/products/{self.product['id']}", "/api/v1/products/{id} [unknown token]",
                     {401}, headers={"Authorization": f"Bearer {tok}"})

    @task(2)
    def no_token(self):
        self._expect("GET", f"/api/v1/products/{self.product['id']}", "/api/v1/products/{id} [no token]", {401})

    @task(2)
    def malformed_authorization(self):
        h = random.choice(["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "bearer\tx", "Token abc"])
        self._expect("GET", f"/api/v1/products/{self.product['id']}",
                     "/api/v1/products/{id} [malformed Authorization]", {401}, headers={"Authorization": h})

    @task(3)
    def checkout_unknown_token(self):
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [unknown token]", {401},
                     headers=self._ck(f"abuse-{uuid.uuid4()}", "pk_" + uuid.uuid4().hex), json_body=self._good_body())

    @task(2)
    def storefront_creates_store(self):
        self._expect("POST", "/api/v1/stores", "/api/v1/stores [storefront key]", {401, 403},
                     headers=self.pk, json_body={"name": "evil", "plan": "enterprise"})

    @task(2)
    def storefront_creates_product(self):
        self._expect("POST", "/api/v1/products", "/api/v1/products [storefront key]", {403}, headers=self.pk,
                     json_body={"sku": "evil", "name": "evil", "price_cents": 1, "currency": "EUR", "stock": 1})

    @task(3)
    def missing_idempotency_key(self):
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [no Idempotency-Key]", {400},
                     headers=self._ck(), json_body=self._good_body())

    @task(2)
    def bad_idempotency_key(self):
        key = random.choice(["k" * 256, "has space", "tab\tkey"])
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [bad Idempotency-Key]", {400, 422},
                     headers=self._ck(key), json_body=self._good_body())

    @task(3)
    def malformed_json(self):
        data = random.choice(["{", "not json", '{"product_id":', "[1,2", "\x00\x01"])
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [malformed JSON]", {400},
                     headers={**self._ck(f"abuse-{uuid.uuid4()}"), "Content-Type": "application/json"}, data=data)

    @task(4)
    def invalid_checkout(self):
        good = self._good_body()
        bad = random.choice([
            {**good, "quantity": 0},
            {**good, "quantity": 101},
            {**good, "quantity": -5},
            {**good, "quantity": "one"},
            {**good, "quantity": 1.5},
            {k: v for k, v in good.items() if k != "product_id"},
            {k: v for k, v in good.items() if k != "consent"},
            {**good, "unexpected_field": True},
            {**good, "customer_id": None},
            {**good, "consent": {"terms_version": TERMS_VERSION}},
            [],
            "string",
        ])
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [invalid body]", {422},
                     headers=self._ck(f"abuse-{uuid.uuid4()}"), json_body=bad)

    @task(2)
    def unknown_product_checkout(self):
        body = {**self._good_body(), "product_id": "prd_" + uuid.uuid4().hex}
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [unknown product]", {404},
                     headers=self._ck(f"abuse-{uuid.uuid4()}"), json_body=body)

    @task(1)
    def oversized_body(self):
        data = json.dumps({**self._good_body(), "customer_id": "x" * 70000})
        self._expect("POST", "/api/v1/checkout", "/api/v1/checkout [oversized body]", {413},
                     headers={**self._ck(f"abuse-{uuid.uuid4()}"), "Content-Type": "application/json"}, data=data)

    @task(2)
    def unknown_ids(self):
        path, name = random.choice([
            (f"/api/v1/products/prd_{uuid.uuid4().hex}", "/api/v1/products/{unknown}"),
            (f"/api/v1/orders/ord_{uuid.uuid4().hex}", "/api/v1/orders/{unknown}"),
            ("/api/v1/products/..%2F..%2Fetc%2Fpasswd", "/api/v1/products/{traversal}"),
            (f"/api/v1/products/{'9' * 600}", "/api/v1/products/{long id}"),
        ])
        self._expect("GET", path, name, {404, 422}, headers=self.pk)

    @task(2)
    def bad_query(self):
        q = random.choice(["limit=0", "limit=201", "limit=abc", "sort=evil", "cursor=%%%garbage", "status=nope"])
        self._expect("GET", f"/api/v1/products?{q}", "/api/v1/products?{bad query}", {422}, headers=self.pk)


class AbuseCanary(GracefulUser):
    """A well-behaved storefront next to the abuser: its reads must keep working (429 is fine)."""

    scenario = "abusive"
    fixed_count = 1
    wait_time = constant(0.2)

    def on_start(self):
        _require_ready()
        self.store = STATE["stores"][0]
        self.product = self.store["products"][0]

    @task
    def read(self):
        with self.client.get(f"/api/v1/products/{self.product['id']}/stock",
                             headers={"Authorization": f"Bearer {self.store['storefront']}"},
                             name="/api/v1/products/{id}/stock [canary]", catch_response=True) as r:
            if r.status_code == 200 or (r.status_code == 429 and header(r, "Retry-After")):
                r.success()
            else:
                r.failure(f"legitimate read failed under abuse: {r.status_code} {problem_code(r)}")
