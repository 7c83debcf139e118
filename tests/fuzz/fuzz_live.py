"""atheris entry point: a live connection to a broker running in this process
(``tests/fuzz/live.py`` says what is checked).

The broker runs on its own thread; atheris's coverage counters are global, so the broker code
run while an input is handled counts for that input (the harness waits for the broker's answer
before returning). Run through ``tests/fuzz/runner.py``; by hand:
``python -m tests.fuzz.fuzz_live [libFuzzer flags] CORPUS_DIR [SEED_DIR ...]``.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["mqttbroker"]):
    from tests.fuzz.live import LiveHarness

_harness: LiveHarness | None = None


def fuzz_one_input(data: bytes) -> None:
    global _harness
    if _harness is None:  # started after atheris.Setup, once, in the fuzzing process
        _harness = LiveHarness()
    _harness.check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()
