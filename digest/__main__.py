"""Allow ``python -m digest``."""

from digest.ops.cli import main

if __name__ == "__main__":
    main()
