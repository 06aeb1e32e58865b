"""``python -m sb3_ncdpo.compare``: the same as ``sb3-ncdpo compare``."""

from sb3_ncdpo.compare.cli import main

if __name__ == "__main__":
    main()
