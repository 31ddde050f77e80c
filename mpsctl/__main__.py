"""`python -m mpsctl` runs the command line."""

from mpsctl.cli import main

# guarded: the worker processes of `sweep --jobs` import this module again as __mp_main__
if __name__ == "__main__":
    main()
