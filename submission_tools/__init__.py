"""Tools around a submission that need both ``submission`` and ``local_eval``: the runner that
writes N checkpoints (:mod:`submission_tools.run`) and the profiler
(:mod:`submission_tools.profile`). ``python -m submission.run`` and ``python -m
submission.profile`` are their entry points."""
