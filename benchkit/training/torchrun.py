"""``python -m benchkit.training.torchrun ARGS``: torchrun (``torch.distributed.run``) that ends
quietly when it is stopped.

torchrun turns a SIGTERM or SIGINT into a ``SignalException`` once it has stopped its workers,
and re-raises it to the top: a stopped run or node leaves a traceback in its log although
nothing failed. Here that becomes one line and the exit status a signal gives (128 + the
signal's number). Everything else is torchrun's own behaviour, failures included.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(f"torchrun: stopped by {name}; its workers were stopped first", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
