"""Loaded for every test folder: pytest (its default ``prepend`` import mode) puts this folder on
``sys.path`` for it, so the helper modules beside it (``plot_checks``) import by name from the
tests of any folder, as ``tests/ssl``'s import ``ssl_testutil`` from theirs."""
