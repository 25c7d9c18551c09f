"""``python -m submission.run``: N unlearned checkpoints within a time budget, resumable.

Example (the competition's job, 512 checkpoints in 8 hours)::

    python -m submission.run --data kaggle:/kaggle/input/neurips-2023-machine-unlearning \\
        --original original_model.pth --arch resnet18 --method scrub --out ckpts --zip

Writes ``unlearned_checkpoint_{i}.pth`` (plain state dicts) and ``manifest.json`` (method,
hyperparameters, seed, data fingerprint, seconds and sha256 per checkpoint) into ``--out``.
Every file is written to a temporary name and moved into place, so an interrupted job leaves
no half-written checkpoint; the same command resumes it, keeping the checkpoints whose
checksum matches the manifest (a checkpoint whose checksum does not match is reported and
redone). A lock file keeps two jobs out of one folder.

The budget: ``--budget-h`` for the whole job (default 8). Each run gets ``--budget-s``
seconds, or an even share of the job budget, and the method scales its work to that. The
runner projects the total from the first runs, warns when N will not fit, and never starts a
run it cannot finish.

Sharding: ``--shard i/K`` writes only the checkpoints j with ``j % K == i`` (K jobs on K
machines, each with its own ``--out`` and its own ``--budget-h``, shared by its runs);
``python -m submission.run merge DIR... --out ALL [--zip]`` (``submission_tools.run.merge``)
puts the
K folders' checkpoints together, checked, as one unsharded job would have written them.

Failures: a bad input (path, option, original model) ends with one ``error:`` line and exit
status 2 before anything is written. An ``unlearning`` that raises, or returns NaN/inf
weights, stops the job with exit status 2 (``--debug`` shows the traceback); a run still going
when the job budget is spent (a hang, say) is interrupted and the job stops with exit status
3. Checkpoints already written stay valid for a resume; a folder this job created and left
without any checkpoint is removed. Original models are read with
``torch.load(weights_only=True)``: a file holding anything but tensors (a pickle that could
run code) is refused. The ``--submission`` file itself is code the user asked us to run: it
runs with the user's rights.
"""
