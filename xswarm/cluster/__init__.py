"""Corpus-scale ``xswarm transcribe --ray``: the same transcription, spread over a Ray cluster.

One driver (the command) expands the inputs, skips those whose output already
exists, and hands batches of files to Ray actors; each actor loads the model
once (on its own MLX thread, as a local run does) and runs
:func:`xswarm.transcribe.transcribe_files` on its batch, writing the same
``--output-dir`` files a local run writes, atomically. The driver alone appends
to the manifest (JSON lines) and draws the progress line.

- :mod:`xswarm.cluster.inputs`: files, directories and ``@list.txt`` -> inputs.
- :mod:`xswarm.cluster.manifest`: the per-file record, appended line by line.
- :mod:`xswarm.cluster.worker`: what runs inside an actor (no Ray import).
- :mod:`xswarm.cluster.job`: the driver: Ray runtime, actors, scheduling, progress.

Importing this package does not import Ray; only :func:`xswarm.cluster.job.run_job`
does, so ``xswarm transcribe`` without ``--ray`` never pays for it.
"""
