"""How fast `optimlab serve` answers, measured against a running server (a subprocess).

* the landscape request of the issue: every registered optimizer (9) × 500 steps on Rosenbrock,
  each request from a different start so that none is answered from the server's cache
  (p50 / p95 over ``--requests``), beside the same computation in-process
  (``run_landscape``, the floor the server cannot beat: ratio = HTTP / in-process);
* the same request repeated (answered from the server's cache of identical requests);
* the same in-process computation the CLI's way (``impl="reference"``: every optimizer on its
  reference rule; the server runs ``impl="auto"``, the fused kernels, where the runner has it);
* the server's own CPU time per uncached request (its /proc counters around the requests: HTTP,
  JSON and the run, whatever the load makes of the wall time);
* the per-step budget, CPU time, in the same run: f and ∇f (autograd, and the closed form where
  the runner has it), each class's step on its one-row parameter (reference rule with a tensor
  lr, and the fused kernel with a number lr: serial twin + per-call fast path), and the rest
  (bookkeeping: the in-process CPU time per step minus the parts above);
* the optimizers' own updates alone: 9 × 500 calls of each class's step on its one-row
  parameter (what any runner stepping the real classes once per step pays at least);
* the playground page in Debian's chromium, from navigation start: *interactive* (every control
  wired, the URL's state applied and the first trajectories drawn, on a canvas sketch) and
  *full view* (Plotly loaded, contour and loss chart drawn). A page without the interactive mark
  (before it existed) counts its full view as interactive.

    PYTHONPATH=. .venv/bin/python benchmarks/serve_latency.py [--requests 40] [--json PATH]

Before/after a change: run this file with PYTHONPATH pointing at each tree (it measures whatever
`optimlab` it imports, and guards the parts an older tree lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from optimlab.landscapes import run_landscape
from optimlab.landscapes.functions import get_function
from optimlab.optim.registry import create, preset_optimizers

try:  # the server's runner implementation (a server from before it ran the reference rules)
    from optimlab.serve.landscape import IMPL
except ImportError:
    IMPL = None

STEPS = 500


def post(url: str, body: dict) -> float:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


def start_server(results: Path) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "optimlab.cli",
        "serve",
        "--port",
        "0",
        "--results",
        str(results),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving "):
            return process, line.split()[1].rstrip("/")
    raise RuntimeError("the server did not start")


def _bare_step():
    try:
        from optimlab.landscapes.runner import bare_step
    except ImportError:  # a runner from before bare_step: the public, decorated step
        bare_step = lambda optimizer: type(optimizer).step  # noqa: E731
    return bare_step


def _one_row_optimizer(name: str, fused: bool) -> torch.optim.Optimizer:
    """`name` on a one-row parameter with a gradient: the reference rule with a tensor lr (the
    runner's way for a tuning grid, and the CLI's), or a number lr and impl="auto" (the fused
    kernel where the class has one: the server's way)."""
    param = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    if fused:
        optimizer = create(name, [param], lr=1e-3)
    else:
        lr = torch.tensor([[1e-3]], dtype=torch.float64)
        optimizer = create(name, [param], impl="reference", lr=lr)
    param.grad = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    return optimizer


def updates_alone(names: list[str], steps: int) -> float:
    """Seconds for `steps` × len(names) steps of the real classes on one-row parameters, without
    gradients, bookkeeping or JSON: the floor of a runner that steps each class once per step."""
    bare_step = _bare_step()
    work = []
    for name in names:
        optimizer = _one_row_optimizer(name, fused=False)
        work.append((optimizer, bare_step(optimizer)))
    began = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            for optimizer, step in work:
                step(optimizer)
    return time.perf_counter() - began


def _cpu_per_call(call, repeats: int = 500, rounds: int = 5) -> float:
    """CPU microseconds per call (after 50 warm calls): the least of `rounds` rounds, the one
    the other processes disturbed least (CPU time, too, grows when they share the core)."""
    for _ in range(50):
        call()
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(repeats):
            call()
        best = min(best, time.process_time() - began)
    return best / repeats * 1e6


def step_budget(names: list[str], in_process_cpu_per_step: dict[str, float]) -> list[tuple]:
    """Rows (part, µs per step the CLI's way, µs per step the server's way), CPU time: what one
    step of the 9-optimizer request costs, part by part (each the least of several rounds; "the
    rest" is the least in-process run's time per step minus the parts).  Both ways take f and ∇f
    from the runner (the closed form where it has one); autograd's cost is shown beside it."""
    landscape = get_function("rosenbrock")
    xy = np.array([[-1.4 + 0.01 * i, 2.0] for i in range(len(names))])

    def autograd() -> None:
        p = torch.from_numpy(xy).requires_grad_(True)
        torch.autograd.grad(landscape.fn(p).sum(), p)

    closed = getattr(landscape, "value_and_grad", None)
    through_autograd = _cpu_per_call(autograd)
    gradient = through_autograd if closed is None else _cpu_per_call(lambda: closed(xy))
    rows = [
        ("f and ∇f through autograd", through_autograd, through_autograd),
        ("f and ∇f as the runner takes them", gradient, gradient),
    ]
    updates = {False: 0.0, True: 0.0}
    bare_step = _bare_step()
    for name in names:
        costs = []
        for fused in (False, True):
            optimizer = _one_row_optimizer(name, fused)
            step = bare_step(optimizer)
            with torch.no_grad():
                costs.append(_cpu_per_call(lambda: step(optimizer)))  # noqa: B023
            updates[fused] += costs[-1]
        rows.append((f"{name} step (reference rule / fused kernel)", *costs))
    server_updates = updates[IMPL == "auto"]
    rows.append(("the nine steps, as each way runs them", updates[False], server_updates))
    cli, server = in_process_cpu_per_step["cli"], in_process_cpu_per_step["server"]
    rest = (cli - gradient - updates[False], server - gradient - server_updates)
    rows.append(("the rest (bookkeeping, loop, metrics)", *rest))
    rows.append(("whole step, in-process (measured)", cli, server))
    return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MARK = "(name) => performance.getEntriesByName(name)[0]?.startTime ?? performance.now()"


def page_times(url: str, repeats: int) -> tuple[list[float], list[float]]:
    """Per page load: seconds from navigation start to interactive, and to the full view."""
    from playwright.sync_api import sync_playwright

    interactive, full = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking"],
        )
        for _ in range(repeats):
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector(
                "body[data-interactive='1'], body[data-ready='1']", state="attached", timeout=60_000
            )
            interactive.append(page.evaluate(MARK, "optimlab:interactive") / 1000)
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=60_000)
            full.append(page.evaluate(MARK, "optimlab:ready") / 1000)
            page.close()
        browser.close()
    return interactive, full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--page-repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds to wait after the server starts"
    )
    args = parser.parse_args()
    names = preset_optimizers("classic")  # the nine
    spec = ",".join(names)
    starts = [(-1.5 + 0.01 * i, 2.0 - 0.01 * i) for i in range(args.requests + 3)]
    process, url = start_server(Path("results"))
    time.sleep(args.settle)  # the server loads numba and its kernels in the background first
    try:
        endpoint = url + "/api/landscape"
        body = {"function": "rosenbrock", "optimizers": spec, "steps": STEPS}
        for start in starts[:3]:  # warm: imports, first allocations
            post(endpoint, {**body, "start": start})
        server_cpu = cpu_seconds(process.pid)
        fresh = [post(endpoint, {**body, "start": s}) for s in starts[3:]]
        server_cpu = (cpu_seconds(process.pid) - server_cpu) / len(fresh)
        cached = [post(endpoint, {**body, "start": starts[3]}) for _ in range(args.requests)]
        server_way = {} if IMPL is None else {"impl": IMPL}
        cli_way = {} if IMPL is None else {"impl": "reference"}
        for way in (server_way, cli_way):  # warm, as the server is
            run_landscape("rosenbrock", spec, steps=STEPS, starts=[starts[0]], **way)
        in_process, in_process_cpu = [], []  # wall and CPU seconds (CPU: less moved by load)
        cli_cpu = []
        for start in starts[3 : 3 + min(10, args.requests)]:
            began, cpu = time.perf_counter(), time.process_time()
            run_landscape("rosenbrock", spec, steps=STEPS, starts=[start], **server_way)
            in_process.append(time.perf_counter() - began)
            in_process_cpu.append(time.process_time() - cpu)
            cpu = time.process_time()
            run_landscape("rosenbrock", spec, steps=STEPS, starts=[start], **cli_way)
            cli_cpu.append(time.process_time() - cpu)
        per_step = {  # the least disturbed run, as for the parts
            "server": min(in_process_cpu) / STEPS * 1e6,
            "cli": min(cli_cpu) / STEPS * 1e6,
        }
        budget = step_budget(names, per_step)
        updates = []
        for _ in range(min(10, args.requests)):
            updates.append(updates_alone(names, STEPS))
        try:
            interactive, full = page_times(url, args.page_repeats)
        except Exception as error:  # no chromium / playwright: the table says so
            print(f"page interactive time not measured: {error}", file=sys.stderr)
            interactive, full = [], []
    finally:
        process.terminate()
        process.wait(timeout=10)
    rows = {
        f"landscape {len(names)} optimizers × {STEPS} steps, HTTP (uncached)": fresh,
        "same, in-process run_landscape": in_process,
        "same, in-process, CPU time of this process": in_process_cpu,
        "same, in-process the CLI's way (reference rules), CPU time": cli_cpu,
        f"the {len(names) * STEPS} optimizer steps alone (floor)": updates,
        "same request repeated, HTTP (server cache)": cached,
        "playground page interactive (chromium)": interactive,
        "playground full view, Plotly drawn (chromium)": full,
    }
    print("| measurement | n | p50 ms | p95 ms |\n| --- | ---: | ---: | ---: |")
    table = {}
    for name, values in rows.items():
        if not values:
            continue
        p50, p95 = (float(np.percentile(values, q)) * 1000 for q in (50, 95))
        table[name] = {"n": len(values), "p50_ms": p50, "p95_ms": p95}
        print(f"| {name} | {len(values)} | {p50:.1f} | {p95:.1f} |")
    ratio = np.median(fresh) / np.median(in_process)
    print(f"\nHTTP / in-process (p50): {ratio:.2f}")
    print(
        f"server CPU time per uncached request (mean of {len(fresh)}): {server_cpu * 1000:.1f} ms"
    )
    print(
        f"\nper-step budget, CPU µs (server: impl={IMPL!r}; load average {os.getloadavg()[0]:.1f})"
    )
    print("| part | CLI's way µs | server's way µs |\n| --- | ---: | ---: |")
    for part, cli, server in budget:
        print(f"| {part} | {cli:.1f} | {server:.1f} |")
    if args.json:
        report = {
            "rows": table,
            "http_over_in_process": ratio,
            "server_cpu_ms_per_request": server_cpu * 1000,
            "budget_us_per_step": {part: [cli, server] for part, cli, server in budget},
            "load_average": os.getloadavg(),
        }
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
