"""`python -m batchyard.cli`: the same as the `batchyard` command."""

from batchyard.cli import main

main()
