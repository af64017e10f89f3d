"""``deploy/``: the manifests are valid and everything they name exists. Nothing is built or applied.

- every YAML file parses, every Kubernetes object has apiVersion, kind and metadata;
- images are the ones the Dockerfiles build (``deploy/docker/README.md`` tags), commands are
  ``labelscan`` subcommands or ``dask`` ones, and ``/app/jobs/<file>`` paths are job files of
  ``jobs/`` (the images copy ``jobs/`` to ``/app/jobs/``) that validate;
- Dockerfiles copy only files that exist, and their ignore files keep them;
- cross references: Secrets, the scheduler service of the DaskCluster, the autoscaler's cluster;
- the SLURM driver compiles and uses dask-jobqueue, runs a job (on a stand-in cluster) and reports
  errors as ``labelscan run`` does; every folder has a README.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
import yaml
from distributed import LocalCluster

from labelscan.cli import cli
from labelscan.jobs import load_job

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
DOCKERFILES = sorted(path for path in (DEPLOY / "docker").glob("Dockerfile*") if path.suffix != ".dockerignore")
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))
JOB_ENVIRON = {"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786", "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "y", "S3_ENDPOINT_URL": "http://127.0.0.1:9000"}


def documents():
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def containers(document):
    """Every container spec in a Kubernetes object (any depth)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found


def built_images():
    """Tags the docker README builds, by Dockerfile: {tag: Dockerfile path}."""
    readme = (DEPLOY / "docker" / "README.md").read_text()
    images = {}
    for dockerfile, tag in re.findall(r"docker build -f (\S+) -t (\S+) \.", readme):
        assert (REPO / dockerfile).is_file(), f"docker README builds a missing {dockerfile}"
        images[tag] = dockerfile
    return images


def test_every_folder_has_a_readme():
    assert (DEPLOY / "README.md").is_file()
    for folder in ("docker", "kubernetes", "slurm"):
        assert (DEPLOY / folder / "README.md").is_file(), f"deploy/{folder} has no README.md"


def test_the_readmes_link_to_files_that_exist():
    for readme in DEPLOY.rglob("README.md"):
        for target in re.findall(r"\]\(((?!https?://|#)[^)#]+)", readme.read_text()):
            assert (readme.parent / target).exists(), f"{readme.relative_to(REPO)} links missing {target}"


def test_dockerfiles_are_built_and_tagged_with_the_version():
    images = built_images()
    assert {Path(path).name for path in images.values()} == {"Dockerfile", "Dockerfile.gpu"}
    assert all(tag.endswith(f":{VERSION}") for tag in images), images
    assert {path.name for path in DOCKERFILES} == {"Dockerfile", "Dockerfile.gpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_references_exist(dockerfile):
    lines = _instructions(dockerfile.read_text())
    assert lines[0][0] == "FROM" and ":" in lines[0][1], "pin the base image with a tag"
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().split()
    copied = []
    for instruction, argument in lines:
        if instruction in ("COPY", "ADD"):
            *sources, _ = [token for token in shlex.split(argument) if not token.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"{dockerfile.name} copies missing {source}"
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, (
                    f"{dockerfile.name}.dockerignore leaves out {source}")
                copied.append(source)
    assert {"pyproject.toml", "README.md", "labelscan", "jobs"} <= set(copied)
    commands = [argument for instruction, argument in lines if instruction == "CMD"]
    assert commands, "no CMD"
    command = yaml.safe_load(commands[-1])
    assert command[0] == "labelscan"
    _check_command(command, dockerfile.name)
    if dockerfile.name == "Dockerfile.gpu":
        assert "rapidsai" in lines[0][1] and "cuda" in lines[0][1]


def _instructions(text):
    """Dockerfile (instruction, argument) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            instruction, _, argument = current.partition(" ")
            logical.append((instruction.upper(), argument.strip()))
            current = ""
    return logical


def _check_command(command, where):
    """A container command: `labelscan <real subcommand> ...` with existing job files, or `dask ...`."""
    if command[0] == "dask":
        assert command[1] in ("scheduler", "worker", "cuda"), f"{where}: unexpected {command}"
        return
    assert command[0] == "labelscan", f"{where}: {command} is not a labelscan or dask command"
    if command[1:] in (["--help"], ["--version"]):
        return
    subcommand = cli.commands.get(command[1])
    assert subcommand is not None, f"{where}: labelscan has no command {command[1]!r}"
    known = {option for param in subcommand.params for option in getattr(param, "opts", [])}
    for token in command[2:]:
        if token.startswith("-"):
            assert token.split("=")[0] in known, f"{where}: labelscan {command[1]} has no option {token}"
    for token in command[2:]:
        if token.startswith("/app/"):
            local = REPO / token[len("/app/"):]
            assert local.is_file(), f"{where}: {token} is not in the image (no {local.relative_to(REPO)})"
            if token.startswith("/app/jobs/"):
                load_job(str(local), environ=JOB_ENVIRON)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_manifest_parses(path):
    objects = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert objects, f"{path} is empty"
    for document in objects:
        assert {"apiVersion", "kind", "metadata"} <= set(document), f"{path}: not a Kubernetes object"
        assert document["metadata"].get("name") and document["metadata"].get("namespace") == "ml"


def test_manifest_images_commands_and_job_files_exist():
    images = built_images()
    seen_kinds = set()
    for path, document in documents():
        seen_kinds.add(document["kind"])
        for container in containers(document):
            where = f"{path.relative_to(REPO)} container {container['name']}"
            assert container["image"] in images, f"{where}: image {container['image']} is not built here"
            _check_command(container.get("command", []) + container.get("args", []), where)
    assert {"DaskJob", "CronJob", "DaskCluster", "DaskAutoscaler", "Secret"} <= seen_kinds


def test_manifest_cross_references():
    objects = {(document["kind"], document["metadata"]["name"]): document for _, document in documents()}
    secrets = {name: document for (kind, name), document in objects.items() if kind == "Secret"}
    for (kind, name), document in objects.items():
        for container in containers(document):
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    secret = secrets.get(reference["name"])
                    assert secret is not None, f"{kind} {name}: no Secret {reference['name']}"
                    assert reference["key"] in secret["stringData"]

    cronjob = objects[("CronJob", "labelscan-nightly")]
    assert len(cronjob["spec"]["schedule"].split()) == 5
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = containers(cronjob)
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    cluster = objects[("DaskCluster", "labelscan")]
    service = f"tcp://{cluster['metadata']['name']}-scheduler.{cluster['metadata']['namespace']}.svc.cluster.local:8786"
    assert env["DASK_SCHEDULER_ADDRESS"] == service
    assert objects[("DaskAutoscaler", "labelscan")]["spec"]["cluster"] == "labelscan"

    daskjob = objects[("DaskJob", "labelscan-scan")]
    assert daskjob["apiVersion"] == "kubernetes.dask.org/v1"
    assert daskjob["spec"]["job"]["spec"]["restartPolicy"] == "Never"
    scheduler = daskjob["spec"]["cluster"]["spec"]["scheduler"]
    assert scheduler["service"]["selector"]["dask.org/cluster-name"] == "labelscan-scan"
    assert daskjob["spec"]["cluster"]["spec"]["worker"]["replicas"] >= 1
    for document in (daskjob["spec"]["cluster"]["spec"], cluster["spec"]):
        port_names = {port["name"] for c in containers(document["scheduler"]) for port in c.get("ports", [])}
        assert {port["targetPort"] for port in document["scheduler"]["service"]["ports"]} <= port_names


def test_slurm_driver():
    driver = DEPLOY / "slurm" / "run_labelscan.py"
    tree = ast.parse(driver.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"dask_jobqueue", "labelscan.jobs"} <= imported
    from labelscan import jobs, progress

    for node in ast.walk(tree):   # the names it imports from labelscan exist
        if isinstance(node, ast.ImportFrom) and node.module in ("labelscan.jobs", "labelscan.progress"):
            module = jobs if node.module == "labelscan.jobs" else progress
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
    sbatch = (DEPLOY / "slurm" / "labelscan.sbatch").read_text()
    assert sbatch.startswith("#!/bin/bash") and "#SBATCH" in sbatch
    for reference in re.findall(r"(deploy/\S+|jobs/\S+\.yaml)", sbatch):
        assert (REPO / reference.rstrip('}"')).exists(), f"labelscan.sbatch names missing {reference}"


class StandInSLURMCluster(LocalCluster):
    """A ``dask_jobqueue.SLURMCluster`` stand-in: an in-process LocalCluster, scaled in jobs."""

    def __init__(self, **kwargs):
        super().__init__(n_workers=0, threads_per_worker=1, processes=False, dashboard_address=":0")

    def scale(self, jobs):
        super().scale(jobs)


def _slurm_driver(monkeypatch):
    """deploy/slurm/run_labelscan.py imported as a module, dask-jobqueue stubbed (it is not a dependency)."""
    monkeypatch.setitem(sys.modules, "dask_jobqueue", types.SimpleNamespace(SLURMCluster=StandInSLURMCluster))
    spec = importlib.util.spec_from_file_location("run_labelscan", DEPLOY / "slurm" / "run_labelscan.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    return driver


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_slurm_driver_reports_an_invalid_job_as_labelscan_run_does(log_format, tmp_path, monkeypatch, capsys):
    """Exit code 2, one ``error:`` line and (JSON logs) an ``error`` event, as ``labelscan run``; no traceback."""
    job = tmp_path / "bad.yaml"
    job.write_text("input: x\n")
    with pytest.raises(SystemExit) as exited:
        _slurm_driver(monkeypatch).main([str(job), "--log-format", log_format])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err.splitlines()
    assert stderr[-1] == f"error: invalid job file: {job}:1: output: required key is missing"
    if log_format == "json":
        record = json.loads(stderr[0])
        assert record["event"] == "error" and record["exit_code"] == 2 and record["error"] == "JobError"
        assert record["command"] == "slurm" and record["job"] == "bad"
    else:
        assert len(stderr) == 1


def test_slurm_driver_runs_a_job_as_labelscan_run_does(tmp_path, monkeypatch, capsys):
    job = tmp_path / "demo.yaml"
    job.write_text(yaml.safe_dump({"input": str(tmp_path / "data"), "output": str(tmp_path / "scan"),
                                   "generate": {"rows": 2000, "classes": 3}}))
    assert _slurm_driver(monkeypatch).main([str(job), "--jobs", "1", "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    events = [record["event"] for record in records]
    assert events[0] == "start" and "cluster" in events and events[-1] == "done", events
    assert records[events.index("cluster")]["cluster"] == "SLURM cluster"
    assert (tmp_path / "scan" / "_SUCCESS").exists()
    assert captured.out.startswith(f"{tmp_path / 'scan'}: ") and "in 2000 rows" in captured.out
