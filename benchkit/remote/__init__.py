"""Remote execution: what runs inside a job and the engines that start jobs.

- :mod:`benchkit.remote.spec`: :class:`JobSpec`, everything one job needs, as data.
- :mod:`benchkit.remote.joblog`: the job's truth in the store (``jobs/<job-id>/``): numbered
  log segments, the heartbeat and ``exit.json``.
- :mod:`benchkit.remote.shim`: ``benchkit job-shim``, the supervisor inside every job.
- :mod:`benchkit.remote.jobrun`: ``benchkit job-run``, what the shim runs: fetch the code
  version from the store (checksums verified), build or reuse its environment, start training.
- :mod:`benchkit.remote.envs`: environments built from a version's requirements, cached.
- :mod:`benchkit.remote.executor`: the executor interface; :mod:`~benchkit.remote.local` (a
  bounded pool of slots on this machine) and :mod:`~benchkit.remote.ray_jobs` (the Ray Jobs
  REST API over ``requests``) implement it.
- :mod:`benchkit.remote.ray_launch`: runs inside a Ray cluster: torchrun on M nodes with a
  static rendezvous.

Nothing here imports the server: the server's job service drives these executors, and the
job side needs only BenchKit's core (the store, the code packages, training).
"""
