"""``python -m nas``: the command line (``torchrun ... -m nas train`` launches ranks)."""

from nas.cli import main

main()
