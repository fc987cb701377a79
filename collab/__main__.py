import sys

from .cli import main

if __name__ == "__main__":  # (not in a process multiprocessing spawns: it imports this too)
    sys.exit(main())
