"""Run the atheris fuzz targets: bounded (pytest) or until stopped (``make fuzz``).

Each target runs in its own process (``python -m tests.fuzz.fuzz_<target>``, libFuzzer flags,
a corpus directory it grows, the generated seeds as a second, read-only corpus). libFuzzer
stops at the first crash and writes the input to ``<artifacts>/crash-<sha1>`` (``timeout-``
for an input that ran past ``-timeout``, ``oom-`` past ``-rss_limit_mb``).

``make fuzz`` (``python -m tests.fuzz.runner``) runs every target at once until Ctrl-C, or for
``FUZZ_SECONDS`` seconds. A crash is copied to ``tests/fuzz/crashes/<target>/`` (ignored by
git) with instructions, and that target starts again. The corpus it grows is kept in
``tests/fuzz/corpus/<target>/`` (ignored by git) for the next run.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGETS = ("decoder", "live")
DICTIONARY = HERE / "mqtt.dict"
REGRESSIONS = HERE / "regressions"
CRASHES = HERE / "crashes"
CORPUS = HERE / "corpus"
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")
DEFAULT_SECONDS = 15

# "#12345  pulse  cov: 372 ft: 1525 corp: 279/22Kb lim: 363 exec/s: 3162 rss: 43Mb"
_STATUS = re.compile(r"^#(\d+)\s+(INITED|NEW|REDUCE|pulse|DONE|RELOAD)\s+(.*)$")
_FIELD = re.compile(r"(cov|ft|corp|exec/s|rss): (\S+)")
_FINAL = re.compile(r"^stat::(\w+):\s+(\d+)")


def fuzz_seconds(default: int = DEFAULT_SECONDS) -> int:
    """The FUZZ_SECONDS environment variable (seconds per target), or ``default``."""
    value = os.environ.get("FUZZ_SECONDS", "").strip()
    return int(value) if value else default


@dataclass
class FuzzRun:
    """One libFuzzer process: how it ended, what it printed, what it found."""

    target: str
    command: list[str]
    returncode: int
    log: Path
    artifacts: list[Path]
    seconds: float
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.artifacts

    def summary(self) -> str:
        """``decoder: 98033 runs in 31 s, 3162 exec/s, cov 372, ft 1525, corpus 279/22Kb``."""
        s = self.stats
        return (f"{self.target}: {s.get('runs', '?')} runs in {self.seconds:.0f} s, "
                f"{s.get('exec/s', '?')} exec/s, cov {s.get('cov', '?')}, ft {s.get('ft', '?')}, "
                f"corpus {s.get('corp', '?')}, rss {s.get('rss', '?')}")

    def failure_report(self, tail: int = 60, crash: str | None = None) -> str:
        """What went wrong, the reproducer, and how to keep it as a regression test
        (``crash``: where the crash file is kept, if not where libFuzzer wrote it)."""
        lines = self.log.read_text(errors="replace").splitlines()
        # from the Python traceback atheris prints, or the end of the log
        start = next((i for i, line in enumerate(lines) if "Uncaught Python exception" in line
                      or "ERROR: libFuzzer" in line), max(len(lines) - tail, 0))
        cmd = " ".join(self.command)
        out = [f"{self.target} fuzz target failed (exit {self.returncode}): {cmd}",
               *lines[start:start + tail]]
        for art in self.artifacts:
            data = art.read_bytes()
            out += [f"reproducer {art} ({len(data)} bytes):", f"  {data!r}",
                    f"  base64 {base64.b64encode(data).decode()}"]
        if crash is None and len(self.artifacts) == 1:
            crash = str(self.artifacts[0])
        out += [how_to_keep(self.target, crash or "<crash file>")]
        return "\n".join(out)


def how_to_keep(target: str, crash: str = "<crash file>") -> str:
    """The instructions printed with every crash."""
    return (f"Keep it as a regression test: fix the bug, then\n"
            f"  mv {crash} tests/fuzz/regressions/{target}/<what-it-found>\n"
            f"(pytest replays every file there: tests/fuzz/test_fuzz_targets.py). Replay it "
            f"under the fuzzer:\n  python -m tests.fuzz.fuzz_{target} {crash}")


def write_seeds(target: str, directory: Path) -> int:
    """The target's generated seed corpus (imported here: it loads the broker)."""
    from tests.fuzz.seeds import write_seeds as _write
    return _write(target, directory)


def command(target: str, seconds: int | None, corpus: Path, seeds: Path, artifacts: Path,
            extra: list[str] | None = None, script: Path | None = None) -> list[str]:
    """The command line of one libFuzzer run (``seconds`` None: until it finds something);
    ``script`` replaces the target's module (the runner's own test uses it)."""
    run = [str(script)] if script else ["-m", f"tests.fuzz.fuzz_{target}"]
    cmd = [sys.executable, *run, "-print_final_stats=1",
           f"-artifact_prefix={artifacts}{os.sep}", "-timeout=30", "-max_len=4096",
           "-rss_limit_mb=4096"]
    if DICTIONARY.exists():
        cmd.append(f"-dict={DICTIONARY}")
    if seconds is not None:
        cmd.append(f"-max_total_time={seconds}")
    return cmd + list(extra or []) + [str(corpus), str(seeds)]


def parse_stats(log: Path) -> dict[str, str]:
    """The last status line's fields (cov, ft, corp, exec/s, rss) and the final stats."""
    stats: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = _STATUS.match(line)
        if m:
            stats["runs"] = m.group(1)
            stats.update(_FIELD.findall(m.group(3)))
            continue
        m = _FINAL.match(line)
        if m:
            stats[m.group(1)] = m.group(2)
    if "average_exec_per_sec" in stats:
        stats["exec/s"] = stats["average_exec_per_sec"]
    if "number_of_executed_units" in stats:
        stats["runs"] = stats["number_of_executed_units"]
    return stats


def find_artifacts(directory: Path) -> list[Path]:
    """Crash, timeout and out-of-memory inputs libFuzzer wrote into ``directory``."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(ARTIFACT_PREFIXES))


class Fuzzer:
    """A started libFuzzer process; :meth:`wait` gives its :class:`FuzzRun`."""

    def __init__(self, target: str, seconds: int | None, work: Path,
                 corpus: Path | None = None, extra: list[str] | None = None,
                 echo: bool = False, script: Path | None = None) -> None:
        self.target = target
        self.work = work
        self.corpus = corpus or work / "corpus"
        self.seeds = work / "seeds"
        self.artifacts = work / "artifacts"
        self.log = work / f"{target}.log"
        for d in (self.corpus, self.seeds, self.artifacts):
            d.mkdir(parents=True, exist_ok=True)
        write_seeds(target, self.seeds)
        self.seconds = seconds
        self.command = command(target, seconds, self.corpus, self.seeds, self.artifacts, extra,
                               script)
        self.started = time.monotonic()
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(self.command, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._echo = echo
        self._reader = threading.Thread(target=self._copy, daemon=True)
        self._reader.start()

    def _copy(self) -> None:
        """Keep the whole log; with ``echo``, show its status and error lines."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.write(line)
            if self._echo:
                text = line.decode(errors="replace").rstrip()
                status = _STATUS.match(text)
                if (status and status.group(2) in ("pulse", "DONE")) or any(
                        w in text for w in ("ERROR", "Uncaught", "Error", "written to")):
                    print(f"[{self.target}] {text}", flush=True)
        self._out.close()

    def stop(self) -> None:
        """Ask libFuzzer to stop (SIGINT: it prints its final stats and exits)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float | None = None) -> FuzzRun:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self._reader.join(10)
        run = FuzzRun(self.target, self.command, rc, self.log, find_artifacts(self.artifacts),
                      time.monotonic() - self.started)
        run.stats = parse_stats(self.log)
        return run


def run_bounded(targets: tuple[str, ...], seconds: int, work: Path) -> dict[str, FuzzRun]:
    """Run ``targets`` side by side for ``seconds`` each; their runs, by target."""
    fuzzers = [Fuzzer(t, seconds, work / t) for t in targets]
    # libFuzzer checks max_total_time between inputs; give startup and a slow input room
    return {f.target: f.wait(seconds + 120) for f in fuzzers}


# -- make fuzz ----------------------------------------------------------------------------------

def _show(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def keep_crashes(run: FuzzRun) -> list[Path]:
    """Copy a run's artifacts into tests/fuzz/crashes/<target>/; the new ones."""
    dest = CRASHES / run.target
    new = []
    for art in run.artifacts:
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / art.name
        if not target.exists():
            shutil.copy2(art, target)
            new.append(target)
    return new


def _fuzz_until_stopped(target: str, seconds: int | None, work: Path,
                        stop: threading.Event, results: dict[str, list[FuzzRun]]) -> None:
    deadline = None if seconds is None else time.monotonic() + seconds
    corpus = CORPUS / target
    while not stop.is_set():
        left = None if deadline is None else int(deadline - time.monotonic())
        if left is not None and left <= 0:
            break
        f = Fuzzer(target, left, work, corpus=corpus, echo=True)
        while f.proc.poll() is None and not stop.wait(0.5):
            pass
        f.stop()
        run = f.wait(60)
        results.setdefault(target, []).append(run)
        if run.artifacts:
            new = keep_crashes(run)
            kept = [CRASHES / target / art.name for art in run.artifacts]
            print(run.failure_report(crash=_show(kept[0]) if len(kept) == 1 else None),
                  flush=True)
            for art in run.artifacts:
                art.unlink()  # kept in tests/fuzz/crashes/; the next run starts clean
            for path in new:
                print(f"[{target}] NEW CRASH saved as {_show(path)}", flush=True)
            if not new:
                # an input of the corpus (or a seed) crashes at once: restarting would only
                # find it again
                print(f"[{target}] stopped: it crashes again on a known input; fix that first "
                      f"(see {_show(CRASHES / target)})", flush=True)
                break
        elif run.returncode not in (0, -signal.SIGINT, 130, 72):
            print(f"[{target}] libFuzzer exited {run.returncode} without a crash file; "
                  f"log: {run.log}", flush=True)
            break


def main(argv: list[str] | None = None) -> int:
    """``make fuzz``: every target at once until Ctrl-C or FUZZ_SECONDS."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", metavar="TARGET",
                    help=f"any of {', '.join(TARGETS)} (default: all)")
    ap.add_argument("--seconds", type=int, default=None,
                    help="per target (default: FUZZ_SECONDS, else until Ctrl-C)")
    args = ap.parse_args(argv)
    targets = tuple(args.targets) or TARGETS
    unknown = set(targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s) {', '.join(sorted(unknown))}; choose from {TARGETS}")
    seconds = args.seconds
    if seconds is None and os.environ.get("FUZZ_SECONDS", "").strip():
        seconds = fuzz_seconds()
    stop = threading.Event()
    results: dict[str, list[FuzzRun]] = {}
    with tempfile.TemporaryDirectory(prefix="mqttbroker-fuzz-") as tmp:
        threads = [threading.Thread(target=_fuzz_until_stopped,
                                    args=(t, seconds, Path(tmp) / t, stop, results))
                   for t in targets]
        how_long = f"for {seconds} s each" if seconds else "until Ctrl-C"
        print(f"fuzzing {', '.join(targets)} {how_long}; corpus in "
              f"{_show(CORPUS)}/, crashes go to {_show(CRASHES)}/",
              flush=True)
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop.set()
            for t in threads:
                t.join()
    crashes = 0
    for runs in results.values():
        for run in runs:
            print(run.summary())
            crashes += len(run.artifacts)
    kept = sorted(CRASHES.glob("*/*")) if CRASHES.exists() else []
    if kept:
        print(f"{len(kept)} crash file(s) in {_show(CRASHES)}/:")
        for p in kept:
            print(f"  {_show(p)}")
        print(how_to_keep("<target>"))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
