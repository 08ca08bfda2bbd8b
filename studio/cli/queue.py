"""`peft-studio queue ...`: runs waiting to train one after another (the app's Queue page too).

    peft-studio queue add RECIPE [RECIPE ...]    # a frozen copy of each recipe, in order
    peft-studio queue list
    peft-studio queue run                        # trains them headless, one after another
    peft-studio queue remove JOB | move JOB up|down | requeue JOB | clear
"""

from __future__ import annotations

import signal
import sys
import time

from studio.cli.common import fmt_duration

STATUS_ORDER = ("running", "queued", "interrupted", "failed", "cancelled", "finished")


def _queue():
    from studio.core.job_queue import JobQueue

    return JobQueue()


def cmd_add(args) -> int:
    from studio.cli.train import apply_overrides
    from studio.core.recipe import Recipe

    queue = _queue()
    for path in args.recipes:
        recipe = Recipe.load(path)
        apply_overrides(recipe, args)
        job = queue.add(recipe)
        print(f"queued {job['id']}  {job['name']} ({job['method']}, {job['steps']} steps)")
    return 0


def job_rows(jobs: list[dict]) -> list[tuple]:
    """The table `queue list` prints (and the Queue page shows): one row per job, in order."""
    rows = []
    for i, job in enumerate(jobs, 1):
        total = job.get("total_steps") or job.get("steps") or "?"
        rows.append((str(i), job["id"], job["status"], f"{job.get('step') or 0}/{total}",
                     job.get("name", ""), job.get("method", ""),
                     (job.get("run_dir") or "").rsplit("/", 1)[-1]))
    return rows


def cmd_list(args) -> int:
    jobs = _queue().jobs()
    if not jobs:
        print("the queue is empty (add runs with `peft-studio queue add RECIPE`)")
        return 0
    rows = [("#", "JOB", "STATUS", "STEP", "NAME", "METHOD", "RUN")] + job_rows(jobs)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for job in jobs:
        if job.get("message"):
            print(f"{job['id']}: {job['message']}")
    return 0


def cmd_run(args) -> int:
    from studio.cli.train import describe_event
    from studio.worker.queue_runner import QueueRunner

    totals: dict[str, int] = {}

    def on_event(job, event):
        if event["event"] == "started":
            totals[job["id"]] = event["total_steps"]
            print(f"== {job['name']} ({job['id']}): {job.get('run_dir')}", flush=True)
        line = describe_event(event, totals.get(job["id"]))
        if line:
            print(f"[{job['name']}] {line}", flush=True)

    runner = QueueRunner(_queue(), on_event=on_event)
    runner.open()
    if not any(j["status"] == "queued" for j in runner.queue.jobs()):
        runner.close()
        print("nothing queued (add runs with `peft-studio queue add RECIPE`; `queue requeue JOB` "
              "puts an ended one back)")
        return 0

    def on_interrupt(signum, frame):
        if runner.interrupting:
            raise KeyboardInterrupt
        print("\nstopping: the current job saves a checkpoint and is marked interrupted "
              "(`queue requeue JOB` resumes it); Ctrl-C again to quit at once",
              file=sys.stderr, flush=True)
        runner.stop()
        runner.cancel_current(interrupt=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    started = time.monotonic()
    try:
        while runner.tick():
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, previous)
        runner.close()
    jobs = _queue().jobs()
    counts = {s: sum(j["status"] == s for j in jobs) for s in STATUS_ORDER}
    print("queue done in " + fmt_duration(time.monotonic() - started) + ": "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 1 if counts["failed"] or counts["interrupted"] else 0


def cmd_remove(args) -> int:
    job = _queue().remove(args.job)
    print(f"removed {job['id']} ({job['name']})")
    return 0


def cmd_move(args) -> int:
    index = _queue().move(args.job, -1 if args.direction == "up" else 1)
    print(f"{args.job} is now #{index + 1}")
    return 0


def cmd_requeue(args) -> int:
    job = _queue().requeue(args.job)
    print(f"{job['id']}: {job['status']}" + (f" ({job['message']})" if job.get("message") else ""))
    return 0


def cmd_clear(args) -> int:
    print(f"removed {_queue().clear_done()} finished job(s)")
    return 0


def register(sub) -> None:
    from studio.cli.train import add_override_options

    p = sub.add_parser("queue", help="runs that train one after another")
    q = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    a = q.add_parser("add", help="queue recipes (a frozen copy of each)")
    a.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe file (.toml or .json)")
    add_override_options(a)
    a.set_defaults(func=cmd_add)
    q.add_parser("list", help="the queue, in order, with each job's status").set_defaults(func=cmd_list)
    q.add_parser("run", help="train the queued jobs one after another, here").set_defaults(func=cmd_run)
    r = q.add_parser("remove", help="take a job out of the queue (not a running one)")
    r.add_argument("job", help="job id (see `queue list`)")
    r.set_defaults(func=cmd_remove)
    m = q.add_parser("move", help="move a job up or down")
    m.add_argument("job", help="job id")
    m.add_argument("direction", choices=("up", "down"))
    m.set_defaults(func=cmd_move)
    rq = q.add_parser("requeue", help="queue an ended job again (resumes from its checkpoint)")
    rq.add_argument("job", help="job id")
    rq.set_defaults(func=cmd_requeue)
    q.add_parser("clear", help="remove the finished jobs").set_defaults(func=cmd_clear)
