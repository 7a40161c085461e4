"""The ``geo-hires`` commands, one module per family, each registered as an entry point of
the group ``geo_hires.commands`` (as ``rio`` takes its plugins): :mod:`~.scene` (``info``,
``plan``, ``synth``, ``convert``), :mod:`~.detect` (``detect``, ``batch``), :mod:`~.evaluate`
(``eval``), :mod:`~.train` (``train``, ``cascade``, ``train-zoom``); the service adds
``serve`` and ``submit`` the same way. Each module's ``add_commands(sub)`` adds its
sub-parsers and sets their ``_handler``; heavy imports happen inside the handlers.
"""
