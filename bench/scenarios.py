"""The scenarios: fan-out over SSE and over long-polling, capacity of idle streams, and ingest."""
import math
import time

from . import measure, profile, stages
from .clients import create_room, post_message, register, register_many, split, wait_all_ready
from .harness import Run, load_average, log, read_latencies, report, worker_connections
from .loadgen import bench_body

COUNTS = ("delivered", "duplicates", "order_violations", "unknown", "lost", "failed", "other_durable",
          "presence_events", "presence_bytes", "pings", "bytes_in", "requests", "empty_polls", "reconnects")


def _merge(finals: list[dict]) -> dict:
    total = {key: sum(final.get(key, 0) for final in finals) for key in COUNTS}
    total["ready"] = sum(final["ready"] for final in finals)
    for key in ("errors", "statuses", "received_histogram"):
        merged = {}
        for final in finals:
            for name, count in final.get(key, {}).items():
                merged[name] = merged.get(name, 0) + count
        total[key] = merged
    return total


def _merge_marks(finals: list[dict]) -> dict:
    """The load-generator processes' own counts over the measurement window (since `mark`)."""
    marks = [final["since_mark"] for final in finals if final.get("since_mark")]
    if not marks:
        return {}
    merged = {key: round(sum(mark[key] for mark in marks), 3) for key in marks[0] if key != "seconds"}
    if merged.get("delivered"):
        merged["reader_cpu_us_per_delivery"] = round(merged["cpu_s"] / merged["delivered"] * 1e6, 2)
    return merged


def _per_message(message_of: list[int], latencies: list[int]) -> dict:
    """How each message's deliveries spread: the time from its first to its last subscriber (the
    fan-out's serial length), and the messages whose slowest delivery was worst."""
    if not latencies or len(message_of) != len(latencies):
        return {}
    by_message = {}
    for k, latency in zip(message_of, latencies):
        by_message.setdefault(k, []).append(latency)
    rows = []
    for k, values in by_message.items():
        values.sort()
        rows.append((k, values[0], values[len(values) // 2], values[-1]))
    spread = [last - first for _, first, _, last in rows]
    worst = sorted(rows, key=lambda row: row[3], reverse=True)[:5]
    return {"messages": len(rows), "spread_first_to_last_ms": measure.percentiles(spread, 1000),
            "slowest_delivery_ms": measure.percentiles([row[3] for row in rows], 1000),
            "worst": [{"k": k, "first_ms": round(a / 1000, 1), "p50_ms": round(b / 1000, 1),
                       "last_ms": round(c / 1000, 1)} for k, a, b, c in worst]}


def _accounts_for(accounts, offset: int, count: int):
    return [accounts[(offset + i) % len(accounts)] for i in range(count)]


def _ramp_timeout(connections: int) -> float:
    return 60 + connections / 40


# Fan-out: one room, N subscribers (SSE or long-polling), one paced publisher.

def fanout(options, subscribers: int, transport: str = "sse") -> dict:
    duration, rate = options.duration, options.rate
    messages = int(duration * rate)
    procs = options.procs or max(1, min(4, math.ceil(subscribers / 2500)))
    users = min(options.users or subscribers, subscribers)
    load_before = load_average()
    with Run(options) as run:
        tag = run.services.run_id
        publisher_account = register(run.url, f"p{tag}")
        slug = create_room(run.url, publisher_account, f"fanout {tag}")
        started = time.monotonic()
        accounts = register_many(run.url, f"s{tag}", users)
        log(f"{users} accounts in {time.monotonic() - started:.1f} s; connecting {subscribers} {transport} clients "
            f"from {procs} generator process(es)")
        hard_deadline = time.monotonic() + _ramp_timeout(subscribers) + options.settle + duration + 180
        path = f"/api/rooms/{slug}/{'events' if transport == 'sse' else 'poll'}"
        offset, generators = 0, []
        for index, part in enumerate(split(subscribers, procs)):
            chosen = _accounts_for(accounts, offset, part)
            generators.append(run.spawn({
                "mode": transport, "count": part, "cookies": [a.cookie for a in chosen], "paths": [path],
                "max_k": messages + 10, "connect_concurrency": options.connect_concurrency,
                "coalesce_ms": options.coalesce_ms, "hard_deadline": hard_deadline,
                "latency_file": str(run.workdir / f"lat-{index}.bin")}, f"sub{index}"))
            offset += part
        ramp_started = time.monotonic()
        setup = wait_all_ready(generators, _ramp_timeout(subscribers))
        ramp_s = time.monotonic() - ramp_started
        log(f"{setup['ready']} ready, {setup['failed']} failed in {ramp_s:.1f} s; settling {options.settle} s")
        time.sleep(options.settle)
        run.refresh_server_pids()
        memory = run.server_group.memory()
        connections = worker_connections(run)
        metrics_before = measure.scrape(run.url)
        run.window.start()
        window_wall = time.time()
        for generator in generators:
            generator.send("mark")
        profiler = _profiler(options, run, duration)
        generator_profiler = _profiler(options, run, duration, [g.pid for g in generators])
        publisher = run.spawn({"mode": "publish", "path": f"/api/rooms/{slug}/messages",
                               "cookie": publisher_account.cookie, "csrf": publisher_account.csrf, "rate": rate,
                               "messages": messages, "body_bytes": options.body_bytes,
                               "hard_deadline": time.monotonic() + duration * 3 + 30}, "publisher")
        published = publisher.wait_for("final", duration * 3 + 60)
        time.sleep(options.drain)
        window = run.window.stop()
        metrics_after = measure.scrape(run.url)
        finals = [generator.stop() for generator in generators]
        totals = _merge(finals)
        window_counts = _merge_marks(finals)
        latencies = read_latencies(run.workdir / f"lat-{i}.bin" for i in range(procs))
        after_append = read_latencies(run.workdir / f"lat-{i}.bin.after-append" for i in range(procs))
        in_generator = read_latencies(run.workdir / f"lat-{i}.bin.in-generator" for i in range(procs))
        message_of = read_latencies(run.workdir / f"lat-{i}.bin.message" for i in range(procs))
        ready = setup["ready"]
        per_message = _per_message(message_of, latencies)
        # A POST the publisher gave up on (timeout) may still have been committed and delivered:
        # every message some subscriber saw counts as published.
        published_messages = max(published["accepted"], per_message.get("messages", 0))
        expected = published_messages * ready
        complete = totals["received_histogram"].get(str(published_messages), 0)
        delivered = totals["delivered"]
        result = {
            "scenario": "fanout" if transport == "sse" else "fanout_poll", "transport": transport,
            "subscribers": subscribers, "accounts": users, "generator_procs": procs, "duration_s": duration,
            "coalesce_ms": options.coalesce_ms,
            "rate": rate, "body_bytes": options.body_bytes,
            "ramp": {"ready": ready, "failed": setup["failed"], "errors": setup["errors"], "seconds": round(ramp_s, 1)},
            "latency_ms": measure.percentiles(latencies, 1000),
            "after_append_ms": measure.percentiles(after_append, 1000),
            "in_generator_ms": measure.percentiles(in_generator, 1000),
            "messages": published_messages, "per_message": per_message,
            "delivered": delivered, "expected": expected,
            "completeness": round(delivered / expected, 5) if expected else None,
            "subscribers_complete": complete, "order_violations": totals["order_violations"],
            "duplicates": totals["duplicates"], "lost_connections": totals["lost"],
            "publisher": published,
            "server_cpu_us_per_delivery": round(window["server_cpu_s"] / delivered * 1e6, 2) if delivered else None,
            "generator_cpu_us_per_delivery": round(window["generator_cpu_s"] / delivered * 1e6, 2)
            if delivered else None,
            "cpu": window, "server_memory_kib": memory, "worker_connections": connections,
            "server_events_delivered": measure.metric_delta(metrics_before, metrics_after,
                                                            "chat_events_delivered_total"),
            "server_request_ms": measure.request_durations(metrics_before, metrics_after),
            "generator": {key: totals[key] for key in ("presence_events", "presence_bytes", "pings", "bytes_in",
                                                        "requests", "empty_polls", "reconnects", "errors",
                                                        "statuses", "other_durable", "unknown")},
            "generator_window": window_counts,
            "loadavg_before": load_before, "run": run.describe(),
        }
        if options.gc_log:
            result["gc_pauses"] = run.server.gc_pauses(window_wall, window_wall + window["window_s"])
        if profiler:
            result["profile"] = profiler.finish()
            result["generator_profile"] = generator_profiler.finish()
        if transport == "poll":
            result["polls_per_delivery"] = round(totals["requests"] / delivered, 3) if delivered else None
        return report(result, options.save)


def _profiler(options, run, seconds: float, pids=None):
    if not options.profile:
        return None
    binary = profile.find(options.py_spy)
    if binary is None:
        log("--profile: py-spy not found (pip install --target /tmp/pyspy py-spy); not profiling")
        return None
    return profile.Profiler(binary, pids or run.server.worker_pids(), seconds, run.workdir)


# Capacity: many idle SSE streams held; memory, Redis connections, and whether a POST still answers.

def capacity(options, streams: int) -> dict:
    rooms_count = max(1, min(options.rooms, streams))
    users = min(options.users or max(1, streams // 10), streams)
    procs = options.procs or max(1, min(4, math.ceil(streams / 5000)))
    probes = 20
    with Run(options) as run:
        tag = run.services.run_id
        load_before = load_average()
        owner = register(run.url, f"o{tag}")
        rooms = [create_room(run.url, owner, f"cap {tag} {i}") for i in range(rooms_count)]
        accounts = register_many(run.url, f"c{tag}", users)
        redis_client = run.services.redis_client()
        # Warm-up: a few streams start every worker's hub, then close, so the baseline includes them.
        warm = run.spawn({"mode": "sse", "count": 4 * options.workers, "cookies": [accounts[0].cookie],
                          "paths": [f"/api/rooms/{rooms[0]}/events"], "hard_deadline": time.monotonic() + 60},
                         "warmup")
        wait_all_ready([warm], 60)
        warm.stop()
        time.sleep(2)
        run.refresh_server_pids()
        before = run.server_group.memory()
        redis_before = _redis_clients(redis_client)
        log(f"baseline {before}; opening {streams} streams over {rooms_count} rooms from {procs} process(es)")
        hard_deadline = time.monotonic() + _ramp_timeout(streams) + 300
        offset, generators = 0, []
        for index, part in enumerate(split(streams, procs)):
            chosen = _accounts_for(accounts, offset, part)
            paths = [f"/api/rooms/{rooms[(offset + i) % rooms_count]}/events" for i in range(part)]
            generators.append(run.spawn({
                "mode": "sse", "count": part, "cookies": [a.cookie for a in chosen], "paths": paths,
                "max_k": probes + 5, "connect_concurrency": options.connect_concurrency,
                "max_attempts": 10, "hard_deadline": hard_deadline,
                "latency_file": str(run.workdir / f"lat-{index}.bin")}, f"hold{index}"))
            offset += part
        ramp_started = time.monotonic()
        setup = wait_all_ready(generators, _ramp_timeout(streams))
        ramp_s = time.monotonic() - ramp_started
        log(f"{setup['ready']} streams held ({setup['failed']} failed) after {ramp_s:.1f} s; settling")
        time.sleep(options.settle)
        after = run.server_group.memory()
        redis_after = _redis_clients(redis_client)
        connections = worker_connections(run)
        metrics = measure.scrape(run.url)
        # Idle cost: CPU while the streams are only held (heartbeats, presence refresh).
        idle_wall = time.time()
        run.window.start()
        time.sleep(options.idle_window)
        idle = run.window.stop()
        # Does a POST still answer quickly? Sequential posts into the first room (its streams get them).
        post_ms = []
        for k in range(probes):
            post_ms.append(post_message(run.url, owner, rooms[0], bench_body(k, options.body_bytes)))
            time.sleep(0.05)
        health_ms = []
        for _ in range(probes):
            health_ms.append(_timed_get(run.url + "/healthz"))
        time.sleep(options.drain)
        finals = [generator.stop() for generator in generators]
        totals = _merge(finals)
        latencies = read_latencies(run.workdir / f"lat-{i}.bin" for i in range(procs))
        held = setup["ready"]
        in_room0 = sum(1 for i in range(streams) if i % rooms_count == 0)
        result = {
            "scenario": "capacity", "streams": streams, "rooms": rooms_count, "accounts": users,
            "generator_procs": procs,
            "ramp": {"ready": held, "failed": setup["failed"], "errors": setup["errors"], "seconds": round(ramp_s, 1)},
            "held_at_end": totals["ready"] - totals["lost"], "lost_connections": totals["lost"],
            "server_memory_before_kib": before, "server_memory_after_kib": after,
            "rss_per_stream_kib": round((after["rss_kib"] - before["rss_kib"]) / held, 2) if held else None,
            "uss_per_stream_kib": round((after["uss_kib"] - before["uss_kib"]) / held, 2) if held else None,
            "redis_connected_clients": {"before": redis_before, "held": redis_after,
                                        "note": "INFO clients minus the bench's own connection"
                                        if not run.services.given_redis else "shared Redis: includes other users"},
            "worker_connections": connections, "server_streams_open": metrics.get(("chat_streams_open", ""), None),
            "idle_cpu": idle,
            "post_while_held_ms": measure.percentiles([int(v * 1000) for v in post_ms], 1000),
            "healthz_while_held_ms": measure.percentiles([int(v * 1000) for v in health_ms], 1000),
            "probe_delivery": {"expected": probes * in_room0, "delivered": totals["delivered"],
                               "latency_ms": measure.percentiles(latencies, 1000)},
            "generator": {key: totals[key] for key in ("presence_events", "presence_bytes", "pings", "bytes_in",
                                                        "errors", "statuses")},
            "loadavg_before": load_before, "run": run.describe(),
        }
        if options.gc_log:
            result["gc_pauses"] = run.server.gc_pauses(idle_wall, time.time())
        redis_client.close()
        return report(result, options.save)


def _redis_clients(client) -> int:
    return int(client.info("clients")["connected_clients"]) - 1


def _timed_get(url: str) -> float:
    import requests  # noqa: PLC0415

    started = time.perf_counter()
    requests.get(url, timeout=30)
    return (time.perf_counter() - started) * 1000


# Ingest: closed-loop posters; accepted messages per second with auth, validation and the database write.

def ingest(options, database_url: str | None) -> dict:
    posters, duration = options.posters, options.duration
    procs = options.procs or 1
    rooms_count = max(1, min(options.rooms, posters))
    with Run(options, database_url=database_url) as run:
        tag = run.services.run_id
        load_before = load_average()
        accounts = register_many(run.url, f"i{tag}", posters)
        rooms = [create_room(run.url, accounts[0], f"ingest {tag} {i}") for i in range(rooms_count)]
        start = time.monotonic() + options.warmup + 2
        end = start + duration
        offset, generators = 0, []
        for index, part in enumerate(split(posters, procs)):
            chosen = _accounts_for(accounts, offset, part)
            generators.append(run.spawn({
                "mode": "post", "count": part, "cookies": [a.cookie for a in chosen], "csrf": [a.csrf for a in chosen],
                "paths": [f"/api/rooms/{rooms[(offset + i) % rooms_count]}/messages" for i in range(part)],
                "body_bytes": options.body_bytes, "tag": f"g{index}", "window_start": start, "window_end": end,
                "hard_deadline": end + 60, "latency_file": str(run.workdir / f"lat-{index}.bin")}, f"post{index}"))
            offset += part
        time.sleep(max(0.0, start - time.monotonic()))
        metrics_before = measure.scrape(run.url)
        run.window.start()
        profiler = _profiler(options, run, duration)
        time.sleep(max(0.0, end - time.monotonic()))
        window = run.window.stop()
        metrics_after = measure.scrape(run.url)
        finals = [generator.wait_for("final", 90) for generator in generators]
        totals = _merge(finals)
        latencies = read_latencies(run.workdir / f"lat-{i}.bin" for i in range(procs))
        accepted = totals["statuses"].get("201", 0)
        result = {
            "scenario": "ingest", "database": run.services.database_kind, "posters": posters, "rooms": rooms_count,
            "generator_procs": procs, "duration_s": duration, "body_bytes": options.body_bytes,
            "accepted": accepted, "accepted_per_s": round(accepted / window["window_s"], 1),
            "statuses": totals["statuses"], "errors": totals["errors"],
            "post_latency_ms": measure.percentiles(latencies, 1000),
            "server_cpu_us_per_message": round(window["server_cpu_s"] / accepted * 1e6, 1) if accepted else None,
            "generator_cpu_us_per_message": round(window["generator_cpu_s"] / accepted * 1e6, 1) if accepted else None,
            "cpu": window,
            "server_messages_accepted": measure.metric_delta(metrics_before, metrics_after,
                                                             "chat_messages_accepted_total"),
            "server_request_ms": measure.request_durations(metrics_before, metrics_after),
            "loadavg_before": load_before, "run": run.describe(),
        }
        if profiler:
            result["profile"] = profiler.finish()
        if options.stages:
            log("timing the write path's stages in-process")
            result["stages_us"] = stages.measure(run, accounts[0], rooms[0], options.stage_requests,
                                                 options.body_bytes)
        return report(result, options.save)
