import inspect
import types

import sollol_dask


def test_public_names_are_sorted_and_exported():
    assert sollol_dask.__all__ == sorted(sollol_dask.__all__)
    for name in sollol_dask.__all__:
        assert hasattr(sollol_dask, name), name


def test_every_public_name_is_in_all():
    public = {name for name, value in vars(sollol_dask).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == set(sollol_dask.__all__)


def test_returned_types_are_exported():
    emb = inspect.signature(sollol_dask.Embedder)
    assert "batch_size" in emb.parameters and "options" not in str(emb).split("*")[0]
    for name in ("EmbedReport", "FleetStatus", "Reference", "FleetWarning", "InsecureTLSWarning",
                 "BatchEmbedder"):
        assert name in sollol_dask.__all__
    # What users of the Ollama client, LiteLLM and Ray Data reach for.
    assert inspect.iscoroutinefunction(sollol_dask.Embedder.aembed)
    assert callable(sollol_dask.Embedder.batch_function)
    for method in ("embed", "aembed", "embed_dataframe", "embed_bag", "embed_parquet",
                   "batch_function"):
        assert "prefix" in inspect.signature(getattr(sollol_dask.Embedder, method)).parameters
    assert "prefix" in emb.parameters


def test_error_tree():
    assert issubclass(sollol_dask.ModelNotFoundError, sollol_dask.NodeError)
    for name in ("ConfigurationError", "NoNodeAvailableError", "NodeError", "BadResponseError",
                 "InputError", "OutputError"):
        assert issubclass(getattr(sollol_dask, name), sollol_dask.SollolError)
