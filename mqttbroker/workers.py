"""``mqttbroker serve --workers N``: N broker processes on the same ports, one cluster.

The parent re-runs ``serve`` with the same arguments and a hidden ``--worker-index I`` in each
child. Every child listens with SO_REUSEPORT (the kernel spreads new connections over them)
and is a node, ``<node>-w<I>``, of the config's cluster: the workers share sessions, routes and
retained messages through Redis exactly as nodes on several machines do. Worker 0 alone serves
the HTTP listener. The parent forwards SIGTERM/SIGINT (stop) and SIGHUP (reload) to the
workers, restarts a worker that dies (:class:`RestartPolicy`: a second later, backing off when
it keeps dying soon after its start, giving up after a few such deaths in a row), and exits
once they have all stopped. A worker whose supervisor is gone without stopping it (killed with
SIGKILL, or by the OOM killer) shuts down by itself: each is told its supervisor's PID
(:data:`SUPERVISOR_ENV`) and watches it (cli.py), so no orphan keeps serving the ports, or
its node's name, beside the workers of a supervisor started again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Final

log = logging.getLogger("mqttbroker.workers")

RESTART_DELAY: Final = 1.0  # seconds before a worker that died is started again
MAX_RESTART_DELAY: Final = 30.0  # ... doubling per quick death in a row, up to this
STABLE_AFTER: Final = 30.0  # seconds a worker must have run for its death not to count as quick
GIVE_UP_AFTER: Final = 6  # quick deaths in a row of one worker: the supervisor stops, status 1
STOP_TIMEOUT: Final = 15.0  # seconds the workers have to stop before they are killed
SUPERVISOR_ENV: Final = "MQTTBROKER_SUPERVISOR"  # a worker's environment: its supervisor's PID


class RestartPolicy:
    """When a worker that died starts again. A worker that ran ``stable_after`` seconds or
    more is restarted ``delay`` seconds after its death. One that died sooner (a quick death:
    it could not start, e.g. Redis unreachable, or crashes at once) waits twice as long as
    after the quick death before, up to ``max_delay``; at ``give_up_after`` quick deaths in a
    row there is no point going on, and :meth:`died` says None: the supervisor stops and exits
    with status 1, so that whatever runs it (systemd, an operator) sees the failure instead of
    a process that restarts its workers for ever. Pure: the times are arguments."""

    __slots__ = ("_quick", "delay", "give_up_after", "max_delay", "stable_after")

    def __init__(self, delay: float = RESTART_DELAY, max_delay: float = MAX_RESTART_DELAY,
                 stable_after: float = STABLE_AFTER, give_up_after: int = GIVE_UP_AFTER) -> None:
        self.delay = delay
        self.max_delay = max(max_delay, delay)
        self.stable_after = stable_after
        self.give_up_after = max(give_up_after, 1)
        self._quick: dict[int, int] = {}  # worker index -> quick deaths in a row

    def quick_deaths(self, index: int) -> int:
        """Worker ``index``'s quick deaths in a row so far."""
        return self._quick.get(index, 0)

    def died(self, index: int, started: float, now: float) -> float | None:
        """Worker ``index``, started at ``started``, died at ``now``: when to start it again,
        or None: give up."""
        quick = self._quick.get(index, 0) + 1 if now - started < self.stable_after else 0
        self._quick[index] = quick
        if quick >= self.give_up_after:
            return None
        return now + min(self.delay * 2.0 ** max(quick - 1, 0), self.max_delay)


def supervise(workers: int, argv: list[str], policy: RestartPolicy | None = None) -> int:
    """Run ``workers`` children of ``mqttbroker <argv>``; return the exit status (1 when
    ``policy`` gave up on a worker)."""
    policy = policy or RestartPolicy()
    args = [a for a in argv if not a.startswith("--workers")]
    if "--workers" in argv:  # "--workers N" as two words: drop the N too
        i = argv.index("--workers")
        args = argv[:i] + argv[i + 2:]

    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}

    def start(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mqttbroker", *args,
                                 "--worker-index", str(index)], env=env)

    procs = {i: start(i) for i in range(workers)}
    started = dict.fromkeys(procs, time.monotonic())
    log.info("started %d workers: pids %s", workers, ", ".join(str(p.pid) for p in
                                                                 procs.values()))
    stopping: list[int] = []
    gave_up = False

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
            if p.poll() is not None and i not in died and not stopping:
                now = time.monotonic()
                at = policy.died(i, started[i], now)
                if at is None:
                    log.error("worker %d (pid %d) exited with status %s: %d deaths in a row, "
                              "each within %gs of its start; giving up, stopping the workers",
                              i, p.pid, p.returncode, policy.quick_deaths(i),
                              policy.stable_after)
                    gave_up = True
                    forward(signal.SIGTERM, None)
                    break
                log.error("worker %d (pid %d) exited with status %s; restarting it in %.1fs",
                          i, p.pid, p.returncode, at - now)
                died[i] = at
        for i, at in list(died.items()):
            if time.monotonic() >= at and not stopping:
                procs[i] = start(i)
                started[i] = time.monotonic()
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
    return 1 if gave_up else status
