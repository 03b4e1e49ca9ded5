"""``python -m deqkit`` (and ``torchrun -m deqkit``) run the ``deqkit`` command."""

from deqkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
