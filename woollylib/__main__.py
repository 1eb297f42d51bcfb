"""``python -m woollylib ...`` runs the ``woollylib`` command (see ``woollylib --help``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
