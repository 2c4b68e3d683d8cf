"""The runners behind the CLI: synth, verify, prefs, eval, finetune, optimize, export, import, report, serve,
label import and pool add (curation).

Each lives in its own module (``mmat.pipeline.synth.run_synth``, ...); the curated names are re-exported
by ``mmat`` itself (``mmat.run_synth``). This package is the only layer that opens the store and calls
programs: run lifecycle, concurrency, resume, progress.
"""

__all__: list[str] = []  # nothing at package level: import the runner's module, or use ``mmat.<name>``
