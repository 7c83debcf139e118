"""``python -m devices``."""

from .cli import main

main()
