"""A standing robustness suite: seeded fuzzers run in subprocesses (see ``_driver``).

- :mod:`.parsers`: mutation fuzzer of the XC / LIBSVM text parsers against a pure-Python
  reference reader of the same grammar.
- :mod:`.tamper`: corrupted model directories must load and predict cleanly or fail cleanly.
- :mod:`.badinput`: a hypothesis matrix of odd inputs to the estimator, ``xmrrs.sparse`` and
  ``xmrrs.indexing``.

``python -m tests.fuzz --help`` runs large budgets on demand; ``tests/fuzz/test_*.py`` run a
small seeded budget in the default pytest run.
"""
