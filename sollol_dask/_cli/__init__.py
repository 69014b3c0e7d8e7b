"""Parts of the ``sollol-dask`` command line that are not commands: exit codes and the
error printer (``_errors``), argument types (``_types``), the flags of ``embed``
(``_embed_args``). The commands themselves are in ``sollol_dask.cli``."""
