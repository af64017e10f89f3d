"""``python -m labelscan``: the ``labelscan`` command line."""

from labelscan.cli import main

if __name__ == "__main__":
    main()
