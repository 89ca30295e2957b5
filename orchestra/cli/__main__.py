"""``python -m orchestra.cli``."""

from orchestra.cli import main

main()
