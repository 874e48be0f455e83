"""Turns the raw results of bench/run.sh into BENCHMARKS.md (stdout).

    python3 bench/report.py WORK_DIR [NOTES.md]
"""

import json
import os
import sys

work = sys.argv[1]
notes = sys.argv[2] if len(sys.argv) > 2 else None

machine = {}
for line in open(os.path.join(work, "machine.txt")):
    key, _, value = line.rstrip("\n").partition("=")
    machine[key] = value

runs = {}
figures = {}
for line in open(os.path.join(work, "results.jsonl")):
    r = json.loads(line)
    if "value" in r:
        figures[r["label"]] = r["value"]
    else:
        runs[r["label"]] = r
commands = [c.rstrip("\n") for c in open(os.path.join(work, "commands.txt"))]


def startup(name):
    try:
        result = json.load(open(os.path.join(work, name)))["results"][0]
        return result
    except (OSError, KeyError, IndexError, ValueError):
        return None


def rps(r):
    return r["requests"] / (r["duration_us"] / 1e6) if r.get("duration_us") else 0.0


def ms(us):
    return "%.2f" % (us / 1000)


def mb(kb):
    return "%.1f MB" % (int(kb) / 1024) if kb not in (None, "", "0") else "n/a"


out = []
w = out.append
quick = machine.get("quick") == "1"
w("# Benchmarks")
w("")
if quick:
    w("**Quick smoke run (`--quick`): 3-second runs, 20 000 keys. Not a measurement.**")
    w("")
w("Written by `bash bench/run.sh` (see `bench/README.md`); do not edit by hand —")
w("the analysis at the end comes from `bench/notes.md`.")
w("")
w("## Machine")
w("")
w("| | |")
w("|---|---|")
for key, title in [
    ("date", "date"),
    ("cpu", "CPU"),
    ("cores", "cores"),
    ("memory", "memory"),
    ("kernel", "kernel"),
    ("lscpu", "`lscpu`"),
    ("rustc", "rustc"),
    ("wrk", "load generator"),
    ("commit", "commit measured"),
    ("store", "store backends measured (`--store`)"),
    ("redis", "Redis"),
    ("nofile", "open files limit (`ulimit -n`)"),
    ("load_before", "`uptime` before"),
    ("load_after", "`uptime` after"),
    ("busy", "other processes over 5% CPU at the start"),
]:
    w("| %s | %s |" % (title, machine.get(key, "").strip() or "—"))
w("")
w("The load generator (wrk, 2 threads) runs on the same cores as the service and")
w("the sandbox: every figure includes that contention.")
w("")

# --- 1 and 2 ---
w("## 1–2. Accepted SMS: service end to end vs. the sandbox alone (baseline)")
w("")
w("Every request has its own valid recipient and code (nothing deduplicated, rate")
w("limits and budget off). `service` is `POST /v1/sms` on kratos-phone-courier,")
w("which calls the sandbox; `baseline` is the same Twilio form request sent")
w("straight to the sandbox; `floor` (saturation only) is `examples/relay_floor.rs`,")
w("the least any relay on this stack does (hyper server, serde_json, reqwest) in front")
w("of the same sandbox. Latencies in ms, as wrk measures them. `steal`: the share of")
w("the machine's CPU time the hypervisor gave to other guests during the run.")
if machine.get("store") in ("both", "redis"):
    w("Here `service` uses the memory store; the Redis store's rows are under")
    w("\"Memory vs Redis store\" below.")
w("")
w("| offered | path | achieved req/s | p50 | p90 | p99 | p99.9 | max | non-2xx | socket errors | CPU of the process | steal |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|")
names = ["500", "2000", "5000", "saturation"]
for name in names:
    for path, label in [("service", "courier-" + name), ("baseline", "sandbox-" + name),
                        ("floor", "floor-" + name)]:
        r = runs.get(label)
        if not r:
            continue
        errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
        seconds = r["duration_us"] / 1e6
        w("| %s | %s | %.0f | %s | %s | %s | %s | %s | %d | %d | %.0f%% of a core | %s |" % (
            name + (" req/s" if name != "saturation" else " (64 conns)"), path, rps(r),
            ms(r["p50"]), ms(r["p90"]), ms(r["p99"]), ms(r["p999"]), ms(r["max"]),
            r["non2xx"], errors, 100 * r["cpu_s"] / seconds if seconds else 0,
            "%.0f%%" % r["steal_pct"] if "steal_pct" in r else "—"))
w("")
w("Overhead of the service (service minus baseline, and service / baseline):")
w("")
w("| offered | p50 diff | p50 ratio | p99 diff | p99 ratio | p99.9 diff | throughput ratio |")
w("|---|---|---|---|---|---|---|")
overhead = {}
for name in names:
    s, b = runs.get("courier-" + name), runs.get("sandbox-" + name)
    if not s or not b:
        continue
    overhead[name] = (s, b)
    w("| %s | %+.2f ms | %.2f× | %+.2f ms | %.2f× | %+.2f ms | %.2f |" % (
        name, (s["p50"] - b["p50"]) / 1000, s["p50"] / max(b["p50"], 1),
        (s["p99"] - b["p99"]) / 1000, s["p99"] / max(b["p99"], 1),
        (s["p999"] - b["p999"]) / 1000, rps(s) / max(rps(b), 1)))
w("")

# --- 3 ---
w("## 3. Rejected load, at saturation (64 connections)")
w("")
w("| request | answer | answers/s | non-2xx | CPU per answer (service) | steal |")
w("|---|---|---|---|---|---|")
answers = {"limited": "429 rate_limited (recipient, after its burst of 3)",
           "malformed": "400 malformed_json",
           "unauth": "401 unauthorized (no credentials)"}
rejected = {}
for mode, answer in answers.items():
    r = runs.get("rejected-" + mode)
    if not r:
        continue
    rejected[mode] = rps(r)
    w("| %s | %s | %.0f | %d | %.1f µs | %s |" % (
        mode, answer, rps(r), r["non2xx"], 1e6 * r["cpu_s"] / max(r["requests"], 1),
        "%.0f%%" % r["steal_pct"] if "steal_pct" in r else "—"))
w("")

# --- memory vs redis ---
STORE_ROWS = [("accepted, 500 req/s", "courier-500"), ("accepted, 2000 req/s", "courier-2000"),
              ("accepted, 5000 req/s", "courier-5000"), ("accepted, saturation", "courier-saturation"),
              ("refused: 429 recipient limit", "rejected-limited"),
              ("refused: 400 malformed JSON", "rejected-malformed"),
              ("refused: 401 no credentials", "rejected-unauth")]


def per_s(r, refused):
    """Accepted sends/s (2xx) or refusals/s (non-2xx)."""
    seconds = r["duration_us"] / 1e6
    ok = r["non2xx"] if refused else r["requests"] - r["non2xx"]
    return ok / seconds if seconds else 0.0


if any(("redis-" + label) in runs for _, label in STORE_ROWS):
    w("## Memory vs Redis store")
    w("")
    w("The same scenarios with `store.backend = \"memory\"` and with `store.backend = \"redis\"`")
    w("(`PHONE_COURIER__STORE__BACKEND=redis`, `PHONE_COURIER__STORE__REDIS__URL` = a")
    w("`redis-server` the script started on a loopback port, `--save '' --appendonly no`,")
    w("`on_error = fail_closed`). Both services run at once on the same sandbox and are")
    w("loaded one after the other at each rate. Accepted: 2xx answers per second;")
    w("refused: the expected non-2xx answers per second. p99 in ms as wrk measures it.")
    w("The redis-server shares the 2 cores with the service, the sandbox and wrk.")
    w("")
    w("| scenario | memory: per s | memory: p99 | redis: per s | redis: p99 | redis / memory | steal (memory / redis) |")
    w("|---|---|---|---|---|---|---|")
    for title, label in STORE_ROWS:
        m, r = runs.get(label), runs.get("redis-" + label)
        if not m and not r:
            continue
        refused = label.startswith("rejected-")
        cell = lambda x: ("%.0f" % per_s(x, refused), ms(x["p99"])) if x else ("—", "—")
        mv, rv = cell(m), cell(r)
        ratio = "%.2f" % (per_s(r, refused) / max(per_s(m, refused), 1)) if m and r else "—"
        steal = "%s / %s" % tuple("%.0f%%" % x["steal_pct"] if x else "—" for x in (m, r))
        w("| %s | %s | %s | %s | %s | %s | %s |" % (title, mv[0], mv[1], rv[0], rv[1], ratio, steal))
    w("")
    w("CPU per answer (user + system time from `/proc/PID/stat`), and answers that were")
    w("not what the scenario expects (non-2xx for accepted sends, 2xx for refusals;")
    w("with Redis a 503 `store_unavailable` would show here); Redis commands per answer")
    w("from `INFO commandstats`, reset before each run (`CONFIG RESETSTAT`):")
    w("")
    w("| scenario | store | requests | unexpected | service CPU per answer | redis-server CPU per answer | both | Redis commands per answer |")
    w("|---|---|---|---|---|---|---|---|")
    for title, label in STORE_ROWS:
        refused = label.startswith("rejected-")
        for store, key in (("memory", label), ("redis", "redis-" + label)):
            x = runs.get(key)
            if not x:
                continue
            n = max(x["requests"], 1)
            unexpected = x["requests"] - x["non2xx"] if refused else x["non2xx"]
            svc = 1e6 * x["cpu_s"] / n
            red = 1e6 * x["store_cpu_s"] / n if "store_cpu_s" in x else None
            cmds = x.get("store_commands")
            if cmds is None:
                cmds_text = "—"
            else:
                total = sum(cmds.values())
                parts = ", ".join("%s %.2f" % (k.upper(), v / n)
                                  for k, v in sorted(cmds.items(), key=lambda kv: -kv[1]) if v / n >= 0.01)
                cmds_text = "%.2f" % (total / n) + (" (%s)" % parts if parts else "")
            w("| %s | %s | %d | %d | %.1f µs | %s | %.1f µs | %s |" % (
                title, store, x["requests"], unexpected, svc,
                "%.1f µs" % red if red is not None else "—", svc + (red or 0), cmds_text))
    w("")
    extra = [("redis_keys_after_accepted", "Redis keys after the accepted runs"),
             ("redis_used_memory_after_accepted", "Redis `used_memory` after them"),
             ("redis_rss_kb_after_accepted", "redis-server RSS after them"),
             ("redis_idle_rss_kb", "service RSS, idle, redis store")]
    shown = [(t, figures[k]) for k, t in extra if figures.get(k)]
    if shown:
        w("| | |")
        w("|---|---|")
        for t, v in shown:
            w("| %s | %s |" % (t, mb(v) if t.endswith("RSS after them") or "RSS, idle" in t else v))
        w("")

# --- 4 ---
w("## 4. Memory (VmRSS of the service)")
w("")
k = runs.get("keys")
i = runs.get("inflight")
w("| state | RSS |")
w("|---|---|")
w("| idle, after start | %s |" % mb(figures.get("idle_rss_kb")))
if k:
    accepted = int(k["requests"] - k["non2xx"])
    w("| after %d distinct recipients accepted through HTTP (recipient limiter on, dedup `max_entries` = the number of keys), at %.0f req/s | %s (peak %s) |" % (
        accepted, rps(k), mb(figures.get("keys_rss_kb")), mb(figures.get("keys_hwm_kb"))))
if i:
    w("| 10 000 connections, sandbox answering after 2 s (%.0f req/s, %d timeouts, %d other socket errors, %d non-2xx) | peak sampled %s, VmHWM %s |" % (
        rps(i), i["timeout"], i["connect"] + i["read"] + i["write"], i["non2xx"],
        mb(figures.get("inflight_peak_sampled_kb")), mb(figures.get("inflight_hwm_kb"))))
w("")
w("The 1 million keys went through HTTP (wrk, `MODE=courier`), not the `keys_memory`")
w("example: each request passed the recipient limiter and was remembered by the dedup")
w("store. %s." % figures.get("numbers_checked", ""))
w("")

# --- 5 ---
w("## 5. Start-up")
w("")
st, floor = startup("startup.json"), startup("startup-floor.json")
if st:
    w("hyperfine, %d runs of `bench/startup.sh`: exec of the service, then GET "
      "`/health/alive` retried over bash's `/dev/tcp` until 200, then kill." % len(st["times"]))
    w("")
    w("| | mean | median | min | max |")
    w("|---|---|---|---|---|")
    w("| exec → `/health/alive` 200 (script total) | %.1f ms | %.1f ms | %.1f ms | %.1f ms |" % (
        1000 * st["mean"], 1000 * st["median"], 1000 * st["min"], 1000 * st["max"]))
    if floor:
        w("| floor: `bash -c 'true & wait'` | %.1f ms | %.1f ms | %.1f ms | %.1f ms |" % (
            1000 * floor["mean"], 1000 * floor["median"], 1000 * floor["min"], 1000 * floor["max"]))
w("")

# --- targets ---
w("## Targets")
w("")
w("| target | measured | met |")
w("|---|---|---|")


def target(text, value, ok):
    w("| %s | %s | %s |" % (text, value, "yes" if ok else "**no**"))


if "2000" in overhead:
    s, b = overhead["2000"]
    d = (s["p99"] - b["p99"]) / 1000
    target("p99 at 2000 req/s at most 1 ms above the baseline", "%+.2f ms (%.2f vs %.2f ms)" % (
        d, s["p99"] / 1000, b["p99"] / 1000), d <= 1.0)
if "saturation" in overhead:
    s, b = overhead["saturation"]
    ratio = rps(s) / max(rps(b), 1)
    target("saturation throughput ≥ 70% of the baseline", "%.0f%% (%.0f vs %.0f req/s)" % (
        100 * ratio, rps(s), rps(b)), ratio >= 0.7)
    f = runs.get("floor-saturation")
    if f:
        w("| (context, not a target) the floor: any relay on this stack, same run | %.0f%% of the baseline (%.0f req/s); the service is %.0f%% of the floor | — |" % (
            100 * rps(f) / max(rps(b), 1), rps(f), 100 * rps(s) / max(rps(f), 1)))
for mode, value in rejected.items():
    target("rejected (%s) ≥ 30 000 answers/s" % mode, "%.0f/s" % value, value >= 30000)
if figures.get("idle_rss_kb"):
    v = int(figures["idle_rss_kb"]) / 1024
    target("idle RSS < 20 MB", "%.1f MB" % v, v < 20)
if figures.get("keys_rss_kb") and k:
    v = int(figures["keys_rss_kb"]) / 1024
    target("RSS < 200 MB with 1 million keys", "%.1f MB (%d keys)" % (v, int(k["requests"] - k["non2xx"])),
           v < 200 and k["requests"] - k["non2xx"] >= 1_000_000)
if figures.get("inflight_hwm_kb"):
    v = int(figures["inflight_hwm_kb"]) / 1024
    target("RSS < 300 MB with 10 000 in flight", "%.1f MB (VmHWM)" % v, v < 300)
if st:
    target("start-up < 100 ms", "%.1f ms (mean, script included)" % (1000 * st["mean"]),
           st["mean"] < 0.1)
w("")

w("## Commands")
w("")
w("```sh")
w("bash bench/run.sh" + (" --quick" if quick else "")
  + (" --store " + machine["store"] if machine.get("store") else ""))
w("```")
w("")
w("runs, in order (URLs are free loopback ports; `bench/load.lua` reads the variables):")
w("")
w("```text")
out.extend(commands)
w("```")
w("")
if notes and os.path.exists(notes):
    out.append(open(notes).read().rstrip("\n"))
    w("")
print("\n".join(out))
