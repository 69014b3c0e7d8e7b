"""cluster-configs/: each way of starting Dask is checked, for real where this machine can
run it (sshd), else against the official schemas (see cluster-configs/README.md)."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import MODEL, REPO
from .slurm import SlurmCluster
from .sshd import Sshd

CONFIGS = REPO / "cluster-configs"


def _corpus(directory, n: int = 600):
    directory.mkdir()
    for f in range(3):
        ids = range(f * n // 3, (f + 1) * n // 3)
        pd.DataFrame({"text": [f"document {i} on a cluster over ssh" for i in ids]}
                     ).to_parquet(directory / f"docs-{f}.parquet")
    return directory


@pytest.mark.root
@pytest.mark.timeout(300)
def test_ssh_config_embeds_through_a_real_sshd(tmp_path, sims):
    sshd = Sshd(tmp_path)
    nodes = [sims("gpu"), sims("gpu")]
    corpus = _corpus(tmp_path / "corpus")
    # The hosts run this interpreter; PYTHONPATH (a worktree's package) goes along.
    remote = sys.executable
    if os.environ.get("PYTHONPATH"):
        remote = f"env PYTHONPATH={os.environ['PYTHONPATH']} {sys.executable}"
    try:
        run = subprocess.run(
            [sys.executable, str(CONFIGS / "ssh" / "embed_over_ssh.py"),
             "--hosts", "127.0.0.1,127.0.0.1", "--ssh-port", str(sshd.port),
             "--ssh-key", str(sshd.key), "--known-hosts", "none", "--remote-python", remote,
             "--scheduler-port", "0", "--dashboard-port", "0", "--model", MODEL,
             *[a for node in nodes for a in ("--node", node.url)],
             str(corpus), str(tmp_path / "out")],
            capture_output=True, text=True, timeout=240)
        accepted = sshd.accepted()
    finally:
        sshd.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    assert "/sollol page: http://" in run.stdout and "/metrics" in run.stdout
    assert "600 in corpus; 600 written now, 600 embedded" in run.stdout, run.stdout
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 600 and out["embedding"].map(len).eq(768).all()
    # The scheduler and the worker were both started through sshd with the test's key.
    assert accepted >= 2


# -- validated by schema: no Kubernetes cluster or container runtime runs here ----------

def _strict(schema):
    """A CRD's schema as the API server applies it: fields it does not declare are pruned
    (silently dropped), so here they are errors."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def _crd_schema(kind: str) -> dict:
    import dask_kubernetes
    import yaml

    crds = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / \
        "dask-kubernetes-operator" / "crds"
    crd = yaml.safe_load((crds / f"{kind.lower()}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = crd["spec"]["versions"][0]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are implied at the top; the API version must be the CRD's
    schema.pop("additionalProperties", None)
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": kind}
    return schema


def _k8s_documents() -> list[tuple[str, dict]]:
    import yaml

    return [(path.name, doc) for path in sorted((CONFIGS / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


K8S_VERSION = "1.33"


def test_kubernetes_manifests_match_the_operator_crds_and_kubernetes_schemas():
    import jsonschema
    import kubernetes_validate

    docs = _k8s_documents()
    kinds = sorted(doc["kind"] for _, doc in docs)
    assert kinds == ["DaskCluster", "Job", "Namespace", "Service", "StatefulSet"]
    for name, doc in docs:
        if doc["kind"] == "DaskCluster":
            jsonschema.validate(doc, _crd_schema("DaskCluster"))
            # The pod specs inside are Kubernetes PodSpecs: check them as Pods.
            for part in ("scheduler", "worker"):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": part},
                       "spec": doc["spec"][part]["spec"]}
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
            service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": doc["spec"]["scheduler"]["service"]}
            kubernetes_validate.validate(service, K8S_VERSION, strict=True)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_check_would_catch_a_wrong_field():
    import jsonschema
    import kubernetes_validate

    docs = dict((doc["kind"], doc) for _, doc in _k8s_documents())
    bad = {**docs["DaskCluster"], "spec": {**docs["DaskCluster"]["spec"], "workers": {}}}
    with pytest.raises(jsonschema.ValidationError, match="'workers' was unexpected"):
        jsonschema.validate(bad, _crd_schema("DaskCluster"))
    statefulset = docs["StatefulSet"]
    bad = {**statefulset, "spec": {**statefulset["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kubernetes_configs_wire_the_preload_and_the_ollama_pods_together():
    docs = dict((doc["kind"], doc) for _, doc in _k8s_documents())
    scheduler = docs["DaskCluster"]["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["args"][:4] == ["dask", "scheduler", "--preload",
                                     "sollol_dask.dashboard.preload"]
    ollama = docs["StatefulSet"]["spec"]
    urls = [f"http://ollama-{i}.ollama:11434" for i in range(ollama["replicas"])]
    worker = docs["DaskCluster"]["spec"]["worker"]["spec"]["containers"][0]
    assert worker["env"] == [{"name": "SOLLOL_NODES", "value": ",".join(urls)}]
    assert docs["Service"]["spec"]["clusterIP"] == "None"  # each pod its own name
    assert "ollama pull nomic-embed-text" in ollama["template"]["spec"]["initContainers"][0]["args"][0]


def _compose() -> dict:
    import yaml

    return yaml.safe_load((CONFIGS / "docker-compose" / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_specification_schema():
    import json

    import jsonschema

    schema = json.loads((CONFIGS / "docker-compose" / "compose-spec.schema.json").read_text())
    compose = _compose()
    jsonschema.validate(compose, schema)
    bad = {**compose, "services": {**compose["services"], "worker": {
        **compose["services"]["worker"], "replicas": 2}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    services = compose["services"]
    assert services["scheduler"]["command"][1:] == ["scheduler", "--preload",
                                                    "sollol_dask.dashboard.preload"]
    assert services["worker"]["environment"]["SOLLOL_NODES"] == \
        "http://ollama-1:11434,http://ollama-2:11434"
    assert services["worker"]["depends_on"]["pull-model"]["condition"] == \
        "service_completed_successfully"


# -- slurm: a real slurmctld and three slurmds on this machine (tests/slurm.py) ------------

@pytest.mark.root
@pytest.mark.timeout(300)
def test_sbatch_submits_the_script_to_real_slurm_and_it_embeds(tmp_path, sims):
    nodes = [sims("gpu"), sims("gpu")]
    corpus = _corpus(tmp_path / "corpus")
    with SlurmCluster() as slurm:
        # sbatch passes its environment to the job (--export=ALL): this interpreter's
        # dask and sollol-dask come first on PATH, PYTHONPATH (a worktree's package) along
        env = {**slurm.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "CORPUS": str(corpus), "OUT": str(tmp_path / "out"), "MODEL": MODEL,
               "SCHEDULER_PORT": "0", "DASHBOARD_PORT": "0", "INTERFACE": "lo"}
        run = subprocess.run(
            ["sbatch", "--wait", "--parsable", "--chdir", str(tmp_path),
             "--output", str(tmp_path / "job.out"), str(CONFIGS / "slurm" / "dask-sbatch.sh"),
             *[n.url for n in nodes]],
            env=env, capture_output=True, text=True, timeout=240)
        job_id = run.stdout.strip()
        job = subprocess.run(["scontrol", "show", "job", job_id], env=slurm.env,
                             capture_output=True, text=True).stdout
    output = (tmp_path / "job.out").read_text()
    assert run.returncode == 0, run.stderr + output[-3000:]
    assert "JobState=COMPLETED" in job and "ExitCode=0:0" in job, job
    assert " NodeList=n[1-3]" in job and "JobName=sollol-embed" in job, job  # its #SBATCH lines
    assert "600 in corpus; 600 written now, 600 embedded" in output, output
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 600 and out["embedding"].map(len).eq(768).all()
    # the scheduler file is named after the job Slurm gave it
    assert (tmp_path / f"scheduler-{job_id}.json").exists()
    # both nodes embedded: the workers on the allocation's other two nodes reached them
    assert all(node.counters.texts > 0 for node in nodes)


# Without root (no slurmd): the job scripts are run with bash, as a compute node would.

def _slurm_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "slurm_cluster", CONFIGS / "slurm" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dashboard_pages():
    """SLURMCluster runs its scheduler in this process, so its preload adds /sollol to
    distributed's process-wide page list: put the list back for the tests that follow."""
    from distributed.dashboard.scheduler import applications

    before = dict(applications)
    yield
    applications.clear()
    applications.update(before)


@pytest.mark.timeout(300)
def test_slurm_cluster_job_script_runs_a_worker_that_embeds(tmp_path, sims, dashboard_pages):
    from distributed import Client

    import sollol_dask as sd

    from .conftest import stop_process_groups

    slurm = _slurm_module()
    nodes = [sims("gpu"), sims("gpu")]
    corpus = _corpus(tmp_path / "corpus")
    args = slurm.parse([str(corpus), str(tmp_path / "out"), "--host", "127.0.0.1",
                        "--scheduler-port", "0", "--dashboard-port", "0",
                        *[a for node in nodes for a in ("--node", node.url)]])
    with slurm.make_cluster(args) as cluster:
        script = cluster.job_script()
        assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH -t 04:00:00" in script
        (tmp_path / "job.sh").write_text(script)
        # What sbatch would run on a compute node: the script itself, with bash.
        job = subprocess.Popen(["bash", str(tmp_path / "job.sh")], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                with sd.Embedder([n.url for n in nodes], model=MODEL) as emb:
                    report = emb.embed_parquet(str(corpus), str(tmp_path / "out"),
                                               client=client)
        finally:
            stop_process_groups([job])
    assert report.rows == report.embedded == 600


@pytest.mark.timeout(300)
def test_sbatch_script_runs_scheduler_workers_and_embedding(tmp_path, sims):
    nodes = [sims("gpu"), sims("gpu")]
    corpus = _corpus(tmp_path / "corpus")
    # srun stand-in: runs the command on this machine (drops srun's own options)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                               'exec "$@"\n')
    (shim / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2", "CORPUS": str(corpus),
           "OUT": str(tmp_path / "out"), "SCHEDULER_FILE": str(tmp_path / "sched.json"),
           "SCHEDULER_PORT": "0", "DASHBOARD_PORT": "0", "MODEL": MODEL, "INTERFACE": "lo"}
    run = subprocess.run(["bash", str(CONFIGS / "slurm" / "dask-sbatch.sh"),
                          *[n.url for n in nodes]], env=env, capture_output=True, text=True,
                         timeout=240, cwd=tmp_path, start_new_session=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "600 in corpus; 600 written now, 600 embedded" in run.stdout, run.stdout
    assert len(pd.read_parquet(tmp_path / "out")) == 600


def test_dockerfile_installs_what_the_readme_says():
    readme = (CONFIGS / "README.md").read_text()
    dockerfile = (CONFIGS / "Dockerfile").read_text()
    assert "pip install . s3fs asyncssh" in readme
    run = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    assert run == ["RUN pip install --no-cache-dir /src s3fs asyncssh"]
    # what is copied to /src is what `pip install .` builds from
    assert "COPY pyproject.toml README.md /src/" in dockerfile
    assert "COPY sollol_dask /src/sollol_dask" in dockerfile
    for config in ("kubernetes/daskcluster.yaml", "docker-compose/compose.yaml"):
        assert "sollol-dask:0.1.0" in (CONFIGS / config).read_text()
