"""``python -m medtransfer``: the medtransfer command, as ``torchrun -m medtransfer run ...``
starts it in each process."""

import sys

from medtransfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
