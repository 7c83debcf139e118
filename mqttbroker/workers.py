"""``mqttbroker serve --workers N``: N broker processes on the same ports, one cluster.

The parent re-runs ``serve`` with the same arguments and a hidden ``--worker-index I`` in each
child. Every child listens with SO_REUSEPORT (the kernel spreads new connections over them)
and is a node, ``<node>-w<I>``, of the config's cluster: the workers share sessions, routes and
retained messages through Redis exactly as nodes on several machines do. Worker 0 alone serves
the HTTP listener. The parent forwards SIGTERM/SIGINT (stop) and SIGHUP (reload) to the
workers, restarts a worker that dies (a second later), and exits once they have all stopped.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from typing import Final

log = logging.getLogger("mqttbroker.workers")

RESTART_DELAY: Final = 1.0  # seconds before a worker that died is started again
STOP_TIMEOUT: Final = 15.0  # seconds the workers have to stop before they are killed


def supervise(workers: int, argv: list[str]) -> int:
    """Run ``workers`` children of ``mqttbroker <argv>``; return the exit status."""
    args = [a for a in argv if not a.startswith("--workers")]
    if "--workers" in argv:  # "--workers N" as two words: drop the N too
        i = argv.index("--workers")
        args = argv[:i] + argv[i + 2:]

    def start(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mqttbroker", *args,
                                 "--worker-index", str(index)])

    procs = {i: start(i) for i in range(workers)}
    log.info("started %d workers: pids %s", workers, ", ".join(str(p.pid) for p in
                                                                 procs.values()))
    stopping: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping.append(sig)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    died: dict[int, float] = {}
    while not stopping:
        for i, p in procs.items():
            if p.poll() is not None and i not in died:
                log.error("worker %d (pid %d) exited with status %s; restarting it", i, p.pid,
                          p.returncode)
                died[i] = time.monotonic() + RESTART_DELAY
        for i, at in list(died.items()):
            if time.monotonic() >= at and not stopping:
                procs[i] = start(i)
                del died[i]
        time.sleep(0.2)
    deadline = time.monotonic() + STOP_TIMEOUT
    status = 0
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        status = status or (p.returncode if p.returncode and p.returncode > 0 else 0)
    return status
