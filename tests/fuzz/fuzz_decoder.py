"""atheris entry point: the packet decoder (``tests/fuzz/decoder.py`` says what is checked).

Run through ``tests/fuzz/runner.py`` (pytest and ``make fuzz`` do); by hand:
``python -m tests.fuzz.fuzz_decoder [libFuzzer flags] CORPUS_DIR [SEED_DIR ...]``, or with
crash files as arguments to replay them.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

# coverage feedback for the pure-Python protocol code: instrument it as it is imported
with atheris.instrument_imports(include=["mqttbroker"]):
    from tests.fuzz.decoder import check_decoder


def fuzz_one_input(data: bytes) -> None:
    check_decoder(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()
