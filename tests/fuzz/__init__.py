"""Coverage-guided fuzzing (atheris/libFuzzer): the packet decoder and a live connection.

See docs/fuzzing.md. ``decoder.py`` and ``live.py`` hold what each target checks, as plain
functions (pytest replays ``regressions/`` through them without atheris); ``fuzz_*.py`` are the
atheris entry points; ``runner.py`` runs them bounded (pytest) or until stopped (``make fuzz``).
"""
