"""Training: ``@bench.train``, ``bench.Run``, the tracker, checkpoints and ``benchkit run``.

The package is called ``training`` rather than ``train`` so that importing it never shadows the
public decorator ``benchkit.training``.
"""
