import sollol_dask


def test_public_names_are_sorted_and_exported():
    assert sollol_dask.__all__ == sorted(sollol_dask.__all__)
    for name in sollol_dask.__all__:
        assert hasattr(sollol_dask, name), name


def test_error_tree():
    assert issubclass(sollol_dask.ModelNotFoundError, sollol_dask.NodeError)
    for name in ("ConfigurationError", "NoNodeAvailableError", "NodeError", "BadResponseError",
                 "InputError", "OutputError"):
        assert issubclass(getattr(sollol_dask, name), sollol_dask.SollolError)
