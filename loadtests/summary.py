#!/usr/bin/env python3
"""The summary of loadtests/bench.sh: Markdown on stdout and in OUT/summary.md, the same
numbers in OUT/summary.json.

Usage: summary.py OUT SELLOUT_STOCK SELLOUT_BUYERS STRICT
Exit status 1 with STRICT=1 when a target is missed or a check fails.
"""
import json
import os
import sys

from report import Run, mark, ms, n, others, per, ratio_cell, sock, us

if len(sys.argv) != 5:
    sys.exit(__doc__)
out, stock, buyers, strict = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
run = Run(out)
load, env, paired_ratio, read_text = run.load, run.env, run.paired_ratio, run.read_bytes

hz, co, so = load("healthz.json"), load("checkout.json"), load("sellout.json")
hz2, rf = load("healthz-refusal.json"), load("refusal.json")
hz3, pg = load("healthz-read.json"), load("product-get.json")
p304, ls = load("product-304.json"), load("list-50.json")
stock1, stock2 = load("sellout-stock.json") or {}, load("refusal-stock.json") or {}

warnings, failures = [], []

# 1 + 2
co_rate = co["created_per_s"] if co else None
hz_rate = hz["ok_per_s"] if hz else None
ratio, ratio_rounds = paired_ratio("checkout", "healthz", lambda p: p["created_per_s"])
p50 = co["latency_ms"]["p50"] if co else None
p99 = co["latency_ms"]["p99"] if co else None
per_tx, tx_orders, tx_batches = run.orders_per_tx("metrics-before-checkout.txt", "metrics-after-checkout.txt")
per_tx_s = "n/a" if per_tx is None else f"{per_tx:.1f} ({n(tx_orders)} orders / {n(tx_batches)} transactions)"

# 2b: checkouts/s with an order.created subscriber vs without, paired per round
ck_plain, ck_hooked = load("checkout-plain.json"), load("checkout-hooked.json")
created_rate = lambda p: p["created_per_s"]  # noqa: E731
hook_ratio, hook_rounds = paired_ratio("checkout-hooked", "checkout-plain", created_rate, created_rate)
hook_deliv = {}
deliv_text = read_text("webhook-deliveries.txt")
if deliv_text is None:
    warnings.append("no webhook-deliveries.txt")
else:
    hook_deliv = dict(kv.split("=") for kv in deliv_text.decode().split())
t_hook = mark(None if hook_ratio is None else hook_ratio >= 0.8)

# 3
created = so["created"] if so else None
answered = so["answered"] if so else None
avail, status = stock1.get("stock_available"), stock1.get("status")
sold_exactly = so is not None and created == stock and avail == 0
if so is None:
    warnings.append("sell-out phase produced no result")
else:
    if created != stock:
        warnings.append(f"sell-out: {created:,} checkouts answered 201, expected exactly {stock:,}")
    if avail != 0:
        warnings.append(f"sell-out: GET /stock says stock_available={avail}, expected 0")
    if status not in (None, "sold_out"):
        warnings.append(f"sell-out: GET /stock says status={status!r}, expected 'sold_out'")
    if answered != buyers:
        warnings.append(f"sell-out: only {answered:,} of {buyers:,} checkouts were answered "
                        f"({sock(so)} socket errors); wrk ran until SELLOUT_TIMEOUT")
    if so.get("threads") != so.get("threads_expected"):
        warnings.append("sell-out: wrk thread count differs from FS_THREADS; shares are wrong")
if rf is not None:
    extra = rf["outcomes"].get("201", 0)
    if extra:
        warnings.append(f"refusal phase: {extra:,} checkouts answered 201 on a sold-out product (OVERSELL)")
    if stock2.get("stock_available") not in (None, 0):
        warnings.append(f"after refusal phase: stock_available={stock2.get('stock_available')}, expected 0")
for name, res in (("healthz", hz), ("checkout", co), ("checkout-plain", ck_plain),
                  ("checkout-hooked", ck_hooked), ("sellout", so), ("healthz-refusal", hz2), ("refusal", rf),
                  ("healthz-read", hz3), ("product-get", pg), ("product-304", p304), ("list-50", ls)):
    if res and sock(res):
        warnings.append(f"{name}: wrk socket errors {res['socket_errors']}")

refused = rf["outcomes"].get("409 sold_out", 0) if rf else None
ref_rate = refused / rf["duration_s"] if rf else None
hz2_rate = hz2["ok_per_s"] if hz2 else None
ref_ratio, ref_ratio_rounds = paired_ratio(
    "refusal", "healthz-refusal", lambda p: p["outcomes"].get("409 sold_out", 0) / p["duration_s"])

# 6-9: reads against /healthz in the same rounds
hz3_rate = hz3["ok_per_s"] if hz3 else None

def read_phase(name, res, target):
    rate = res["ok_per_s"] if res else None
    r, per_round = paired_ratio(name, "healthz-read", lambda p: p["ok_per_s"])
    return rate, r, per_round, mark(None if r is None else r >= target)

pg_rate, pg_ratio, pg_rounds, t_pg = read_phase("product-get", pg, 0.8)
p304_rate, p304_ratio, p304_rounds, t_304 = read_phase("product-304", p304, 0.8)
ls_rate, ls_ratio, ls_rounds, t_ls = read_phase("list-50", ls, 0.5)

def lat(res):
    return f"{ms(res and res['latency_ms']['p50'])} / {ms(res and res['latency_ms']['p99'])}"

etag_before = (read_text("product-304-etag.txt") or b"").decode().strip()
etag_after = (read_text("product-304-etag-after.txt") or b"").decode().strip()
if p304 is not None:
    if not etag_before:
        warnings.append("product-304: the product page had no ETag; no If-None-Match was sent")
    elif etag_after != etag_before:
        warnings.append(f"product-304: the ETag changed during the phase ({etag_before} -> {etag_after or 'none'})")

# list-50: what one response looked like (from the curl before the rounds)
ls_items, ls_cursor, ls_encoding, ls_status = None, None, None, None
hdrs = read_text("list-50-check.headers")
if hdrs is not None:
    for line in hdrs.decode("latin-1").splitlines():
        if line.startswith("HTTP/"):
            ls_status = line.split()[1] if len(line.split()) > 1 else None
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-encoding":
            ls_encoding = v.strip()
body = read_text("list-50-check.body")
if ls is not None and ls_status not in (None, "200"):
    warnings.append(f"list-50: GET ?limit=50 answered {ls_status} before the rounds, expected 200")
elif body is not None:
    try:
        if ls_encoding == "gzip":
            import gzip
            body = gzip.decompress(body)
        doc = json.loads(body)
        ls_items, ls_cursor = len(doc.get("items", [])), doc.get("next_cursor")
    except (OSError, ValueError, AttributeError, EOFError):
        pass
if ls is not None:
    if ls_items is not None and ls_items != 50:
        warnings.append(f"list-50: GET ?limit=50 returned {ls_items} items, expected 50")
    if ls_items == 50 and ls_cursor is None:
        warnings.append("list-50: next_cursor is null although the store has more than 50 products")
ls_gz = f"{ls['gzipped']:,} of {ls['answered']:,} responses gzip" if ls else "n/a"
ls_size = "n/a"
if ls and ls.get("mean_wire_bytes") is not None:
    ls_size = (f"{n(ls['mean_wire_bytes'])} B on the wire (wrk transfer/s ÷ requests/s: headers + body), "
               f"{n(ls.get('mean_body_bytes'))} B body; {ls_gz}")
if ls_items is not None:
    ls_size += f"; {ls_items} items, next_cursor {'set' if ls_cursor else 'null'}"

t_hot = mark(None if co_rate is None else co_rate >= 20000)
t_ratio = mark(None if ratio is None else ratio >= 0.35)
t_p99 = mark(None if p99 is None else p99 < 50)
t_ref = mark(None if ref_ratio is None else ref_ratio >= 0.8)
t_sold = mark(so is not None and sold_exactly)
for label, t in (("hot SKU >= 20,000 checkouts/s", t_hot), ("checkout/healthz >= 0.35", t_ratio),
                 ("p99 < 50 ms", t_p99), ("refusals/healthz >= 0.8", t_ref),
                 ("checkout with/without webhook subscriber >= 0.8", t_hook),
                 (f"exactly {stock:,} sold", t_sold), ("product-get/healthz >= 0.8", t_pg),
                 ("product-304/healthz >= 0.8", t_304), ("list-50/healthz >= 0.5", t_ls)):
    if t != "PASS":
        failures.append(f"{label}: {t}")

lines = [
    f"### flashsale benchmark {env.get('date_utc', '')}",
    "",
    f"git `{env.get('git_rev')}`{' (dirty)' if env.get('git_dirty') == 'yes' else ''}, "
    f"{env.get('cpus')} CPUs, {env.get('wrk')}; wrk -t{env.get('threads')} -c{env.get('connections')}, "
    f"{env.get('duration')} per phase in {env.get('rounds')} rounds alternating with /healthz "
    f"(ratios and latency: median of the rounds); {env.get('database')}.",
    "",
    "| measure | result | target | |",
    "|---|---|---|---|",
    f"| hot SKU: committed checkouts/s (201) | {n(co_rate)} | >= 20,000 | {t_hot} |",
    f"| hot SKU: latency p50 / p99 | {ms(p50)} / {ms(p99)} | p99 < 50 ms | {t_p99} |",
    f"| hot SKU: non-201 responses | {others(co, {'201'})} | | |",
    f"| hot SKU: mean orders per DB transaction | {per_tx_s} | | |",
    f"| /healthz: requests/s, p50 / p99 | {n(hz_rate)}, {ms(hz and hz['latency_ms']['p50'])} / {ms(hz and hz['latency_ms']['p99'])} | | |",
    f"| ratio checkout / healthz | {ratio_cell(ratio, ratio_rounds)} | >= 0.35 | {t_ratio} |",
    f"| hot SKU without / with an order.created subscriber: checkouts/s | {n(ck_plain and ck_plain['created_per_s'])} / {n(ck_hooked and ck_hooked['created_per_s'])} | | |",
    f"| ratio with / without subscriber | {ratio_cell(hook_ratio, hook_rounds)} | >= 0.8 | {t_hook} |",
    f"| webhook: orders created with subscriber / delivered (distinct) | {hook_deliv.get('created', 'n/a')} / {hook_deliv.get('distinct', 'n/a')} | all | |",
    f"| sell-out: time to the {stock:,}th 201 ({buyers:,} buyers) | {ms(so and so.get('sellout_ms'))} | | |",
    f"| sell-out: all {buyers:,} buyers answered after | {ms(so and so.get('all_answered_ms'))} | | |",
    f"| sell-out: 201s / stock_available after | {n(created)} / {n(avail)} | exactly {stock:,} / 0 | {t_sold} |",
    f"| sell-out: other responses | {others(so, {'201'})} | | |",
    f"| after sell-out: refusals/s (409 sold_out) | {n(ref_rate)} (p99 {ms(rf and rf['latency_ms']['p99'])}) | | |",
    f"| after sell-out: /healthz requests/s, same rounds | {n(hz2_rate)} | | |",
    f"| ratio refusals / healthz | {ratio_cell(ref_ratio, ref_ratio_rounds)} | >= 0.8 | {t_ref} |",
]
if rf and others(rf, {"409 sold_out"}) != "none":
    lines.append(f"| after sell-out: other responses | {others(rf, {'409 sold_out'})} | | |")
lines += [
    f"| reads: /healthz requests/s, same rounds, p50 / p99 | {n(hz3_rate)}, {lat(hz3)} | | |",
    f"| product-get: requests/s (200), p50 / p99 | {n(pg_rate)}, {lat(pg)} | | |",
    f"| product-get: non-200 responses | {others(pg, {'200'})} | | |",
    f"| ratio product-get / healthz | {ratio_cell(pg_ratio, pg_rounds)} | >= 0.8 | {t_pg} |",
    f"| product-304: 304s/s (If-None-Match), p50 / p99 | {n(p304_rate)}, {lat(p304)} | | |",
    f"| product-304: non-304 responses | {others(p304, {'304'})} | | |",
    f"| ratio product-304 / healthz | {ratio_cell(p304_ratio, p304_rounds)} | >= 0.8 | {t_304} |",
    f"| list-50: requests/s (200, gzip), p50 / p99 | {n(ls_rate)}, {lat(ls)} | | |",
    f"| list-50: non-200 responses | {others(ls, {'200'})} | | |",
    f"| list-50: mean response size | {ls_size} | | |",
    f"| ratio list-50 / healthz | {ratio_cell(ls_ratio, ls_rounds)} | >= 0.5 | {t_ls} |",
]
# Where the CPU went: the server's and the private PostgreSQL's CPU time while wrk ran,
# per request (per 201 for the hot SKU), and the server's against its /healthz rounds;
# and the WAL the private PostgreSQL wrote meanwhile, per request.
lines += ["", "CPU per request while the phase ran (server and PostgreSQL from `/proc`, wrk's "
          "own from its user + system time: it shares the cores), and WAL written "
          "(`pg_current_wal_insert_lsn()` difference):", "",
          "| phase | server | × its /healthz rounds | private PostgreSQL | wrk | WAL |",
          "|---|---|---|---|---|---|"]
cpu = {}
for label, res, count, ref in (("/healthz (hot-SKU rounds)", hz, "requests", None),
                               ("hot SKU, per 201", co, "created", hz),
                               ("/healthz (refusal rounds)", hz2, "requests", None),
                               ("refusal", rf, "requests", hz2),
                               ("/healthz (read rounds)", hz3, "requests", None),
                               ("product-get", pg, "requests", hz3),
                               ("product-304", p304, "requests", hz3),
                               ("list-50", ls, "requests", hz3)):
    server, db = per(res, "server_cpu_s", count), per(res, "db_cpu_s", count)
    client = per(res, "client_cpu_s", count)
    wal = per(res, "wal_bytes", count, 1)
    base = per(ref, "server_cpu_s")
    factor = f"{server / base:.2f}" if server is not None and base else ""
    cpu[label] = {"server_us": server, "db_us": db, "vs_healthz": server / base if factor else None,
                  "client_us": client, "wal_bytes": wal}
    lines.append(f"| {label} | {us(server)} | {factor} | {us(db)} | {us(client)} | "
                 f"{'n/a' if wal is None else n(wal) + ' B'} |")
if warnings:
    lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
text = "\n".join(lines) + "\n"

with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"env": env, "checkout_per_s": co_rate, "healthz_per_s": hz_rate, "ratio": ratio,
               "p50_ms": p50, "p99_ms": p99, "orders_per_tx": per_tx,
               "checkout_plain_per_s": ck_plain and ck_plain["created_per_s"],
               "checkout_hooked_per_s": ck_hooked and ck_hooked["created_per_s"],
               "webhook_ratio": hook_ratio, "webhook_deliveries": hook_deliv,
               "sellout_ms": so and so.get("sellout_ms"), "sellout_created": created,
               "sellout_stock_available": avail, "refusals_per_s": ref_rate,
               "healthz_before_refusal_per_s": hz2_rate, "refusal_ratio": ref_ratio,
               "healthz_before_reads_per_s": hz3_rate,
               "product_get_per_s": pg_rate, "product_get_ratio": pg_ratio,
               "product_304_per_s": p304_rate, "product_304_ratio": p304_ratio,
               "list_50_per_s": ls_rate, "list_50_ratio": ls_ratio,
               "list_50_mean_wire_bytes": ls and ls.get("mean_wire_bytes"),
               "list_50_mean_body_bytes": ls and ls.get("mean_body_bytes"),
               "cpu_per_request": cpu,
               "warnings": warnings, "failed_targets": failures}, f, indent=2)
print(text)
for w in warnings:
    print(f"WARNING: {w}", file=sys.stderr)
sys.exit(1 if strict and (failures or warnings) else 0)
