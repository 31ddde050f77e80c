"""`python -m mpsctl` runs the command line."""

from mpsctl.cli import main

main()
