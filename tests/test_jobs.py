"""Job files (``labelscan run``), the dask.config defaults, and the CLI's observability options.

- every shipped job in ``jobs/`` validates; bad job files name the key and the line (exit 2);
- ``labelscan run jobs/demo.yaml`` works end to end on small data (``--set generate.rows=...``),
  with JSON logs (every stage) and a performance report;
- ``DASK_LABELSCAN__...`` environment variables override the defaults in ``labelscan.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import dask
import pytest
from click.testing import CliRunner

import labelscan
from labelscan import config
from labelscan.cli import cli
from labelscan.jobs import JobError, JobTimeout, job_cluster, load_job, parse_job, time_limit
from labelscan.progress import STAGES, JsonLog, ScanProgress, task_stage

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
ENVIRON = {"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786", "AWS_ACCESS_KEY_ID": "id",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "S3_ENDPOINT_URL": "http://127.0.0.1:9000"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def job_problems(text, **kwargs):
    with pytest.raises(JobError) as caught:
        parse_job(text, source="job.yaml", environ=kwargs.pop("environ", {}), **kwargs)
    return caught.value.problems


# ---------------------------------------------------------------------------------------------
# schema


def test_jobs_are_shipped():
    assert {path.name for path in JOBS} >= {"demo.yaml", "nightly-s3.yaml", "gpu.yaml"}


@pytest.mark.parametrize("path", JOBS, ids=lambda path: path.name)
def test_every_shipped_job_validates(path):
    job = load_job(str(path), environ=ENVIRON)
    kwargs = job.scan_kwargs(environ=ENVIRON)
    parameters = set(__import__("inspect").signature(labelscan.scan).parameters)
    assert set(kwargs) <= parameters
    assert kwargs["input_path"] and kwargs["out_path"]
    described = job.describe()
    assert "${" not in json.dumps({key: value for key, value in described.items() if key != "storage_options_env"})


def test_nightly_job_reads_secrets_from_the_environment():
    job = load_job(str(REPO / "jobs" / "nightly-s3.yaml"), environ=ENVIRON,
                   now=__import__("datetime").datetime(2026, 11, 25, 2, 30))
    assert job["output"].endswith("/2026-11-25/")
    assert job["cluster"] == {"kind": "scheduler", "scheduler": "tcp://127.0.0.1:8786"}
    options = job.storage_options(environ=ENVIRON)
    assert options["key"] == "id" and options["secret"] == "s3cr3t-value"
    assert options["client_kwargs"] == {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9000"}
    shown = json.dumps(job.describe())
    assert "s3cr3t-value" not in shown and "${AWS_ACCESS_KEY_ID}" in shown
    with pytest.raises(JobError, match=r"nightly-s3.yaml:\d+: storage_options_env.secret: environment "
                                       r"variable AWS_SECRET_ACCESS_KEY is not set"):
        job.storage_options(environ={"AWS_ACCESS_KEY_ID": "id", "S3_ENDPOINT_URL": "x"})


def test_minimal_job_gets_defaults():
    job = parse_job("input: data/\noutput: out/\n", source="jobs/job.yaml", environ={})
    assert job["cluster"] == {"kind": "local"} and job["filter_by"] == "prune_by_noise_rate"
    assert job["columns"] == {"label": "label", "pred_probs": "pred_probs", "id": None}
    kwargs = job.scan_kwargs(environ={})
    assert kwargs["retries"] is None and kwargs["storage_options"] is None   # None: config default
    assert kwargs["multi_label"] is False
    assert job.name == "job"
    multi = parse_job("input: data/\noutput: out/\nmulti_label: true\ncolumns:\n  label: labels\n",
                      source="jobs/job.yaml", environ={})
    assert multi.scan_kwargs(environ={})["multi_label"] is True


BAD_JOBS = [
    ("input: d/\noutput: o/\nfilterby: both\n", r"job.yaml:3: unknown key 'filterby' \(did you mean 'filter_by'\?\)"),
    ("input: d/\noutput: o/\nretries: three\n", r"job.yaml:3: retries: must be an integer; got a string"),
    ("input: d/\noutput: o/\nfilter_by: prune\n", r"job.yaml:3: filter_by: must be one of prune_by_noise_rate, "),
    ("input: d/\noutput: o/\n\nrank_by: margin\n", r"job.yaml:4: rank_by: must be one of .*got 'margin'"),
    ("input: d/\noutput: o/\ncolumns:\n  label: 3\n", r"job.yaml:4: columns.label: must be a non-empty string"),
    ("input: d/\noutput: o/\ncolumns:\n  lable: y\n", r"job.yaml:4: unknown key 'columns.lable' \(did you mean 'label'\?\)"),
    ("input: d/\noutput: o/\nfrac_noise: 2\n", r"job.yaml:3: frac_noise: must be at most 1.0"),
    ("input: d/\noutput: o/\noverwrite: maybe\n", r"job.yaml:3: overwrite: must be true or false"),
    ("input: d/\noutput: o/\ncluster: somewhere\n", r"job.yaml:3: cluster: must be local, a scheduler address"),
    ("input: d/\noutput: o/\ncluster:\n  schedulr: tcp://h:1\n", r"job.yaml:4: unknown key 'cluster.schedulr'"),
    ("input: d/\noutput: o/\ncluster:\n  scheduler: tcp://h:1\n  scheduler_file: f\n",
     r"job.yaml:4: cluster: give exactly one of"),
    ("input: d/\noutput: o/\ncluster: {scheduler: 'tcp://h:1'}\nresources: {workers: 2}\n",
     r"job.yaml:4: resources: applies to cluster: local only"),
    ("input: d/\noutput: o/\ntimeout: soon\n", r"job.yaml:3: timeout: must be a positive number of seconds"),
    ("input: d/\noutput: o/\nstorage_options_env:\n  key: not-a-name\n",
     r"job.yaml:4: storage_options_env.key: must be the NAME of an environment variable"),
    ("input: d/\noutput: o/\nfilter_by: confident_learning\nnum_to_remove_per_class: [1, 2]\n",
     r"job.yaml:4: num_to_remove_per_class: only applies to filter_by"),
    ("input: d/\noutput: o/\nretries: 1\nretries: 2\n", r"job.yaml:4: retries: given twice \(first on line 3\)"),
    ("input: d/\noutput: o/${MISSING_VARIABLE}\n", r"job.yaml:2: output: environment variable MISSING_VARIABLE is not set"),
    ("input: d/\n", r"job.yaml:1: output: required key is missing"),
    ("input: d/\noutput: [o/\n", r"job.yaml:\d+: not valid YAML"),
    ("- input: d/\n", r"job.yaml:1: a job file is a mapping"),
    ("", r"job.yaml: the job file is empty"),
]


@pytest.mark.parametrize("text, message", BAD_JOBS, ids=[message[:40] for _, message in BAD_JOBS])
def test_bad_job_names_the_key_and_the_line(text, message):
    problems = job_problems(text)
    assert any(re.search(message, problem) for problem in problems), problems


def test_every_problem_is_reported_at_once():
    problems = job_problems("input: d/\noutput: o/\nfilterby: both\nretries: -1\nrank_by: x\n")
    assert [problem.split(":")[1] for problem in problems] == ["3", "4", "5"]


def test_overrides_from_the_command_line():
    job = parse_job("input: d/\noutput: o/\ngenerate: {rows: 10}\n", environ={},
                    overrides=["generate.rows=20", "cluster={scheduler: tcp://h:1}", "columns.id=key"])
    assert job["generate"]["rows"] == 20 and job["cluster"]["scheduler"] == "tcp://h:1"
    assert job["columns"]["id"] == "key"
    problems = job_problems("input: d/\noutput: o/\n", overrides=["retries=lots"])
    assert problems == ["--set retries=lots: retries: must be an integer; got a string ('lots')"]


def test_cli_bad_job_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: d/\noutput: o/\nfilter_by: prune\nworkers: 2\n")
    result = invoke("run", bad)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: invalid job file:") and "Traceback" not in result.output
    assert f"{bad}:3: filter_by: must be one of" in result.output
    assert f"{bad}:4: unknown key 'workers'" in result.output
    assert invoke("run", tmp_path / "missing.yaml").exit_code == 2


def test_cli_dry_run_prints_the_resolved_job(monkeypatch):
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    result = invoke("run", REPO / "jobs" / "nightly-s3.yaml", "--dry-run")
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)
    assert resolved["cluster"]["scheduler"] == "tcp://127.0.0.1:8786"
    assert resolved["storage_options_env"]["secret"] == "${AWS_SECRET_ACCESS_KEY}"
    assert "s3cr3t-value" not in result.stdout
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    missing = invoke("run", REPO / "jobs" / "nightly-s3.yaml", "--dry-run")
    assert missing.exit_code == 2 and "AWS_SECRET_ACCESS_KEY is not set" in missing.output


def test_cluster_errors_are_clear(tmp_path):
    job = parse_job(f"input: d/\noutput: o/\ncluster: {{scheduler_file: {tmp_path}/none.json}}\n",
                    source="job.yaml", environ={})
    with pytest.raises(JobError, match="cluster.scheduler_file: .*none.json does not exist"):
        with job_cluster(job):
            pass
    gateway = parse_job("input: d/\noutput: o/\ncluster:\n  gateway: {address: 'http://127.0.0.1:1', "
                        "workers: 2}\n", source="job.yaml", environ={})
    assert gateway["cluster"]["gateway"]["workers"] == 2
    try:
        import dask_gateway  # noqa: F401
    except ImportError:
        with pytest.raises(JobError, match="cluster.gateway needs dask-gateway: pip install dask-gateway"):
            with job_cluster(gateway):
                pass


def test_time_limit_raises_a_timeout():
    with pytest.raises(JobTimeout, match="ran longer than its timeout of 0.05 s") as caught:
        with time_limit(0.05, "job x"):
            time.sleep(2)
    assert caught.value.exit_code == 4
    with time_limit(None):   # no limit
        pass


# ---------------------------------------------------------------------------------------------
# configuration defaults (dask.config)


@pytest.fixture
def config_env(monkeypatch):
    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        dask.config.refresh()

    yield set_env
    monkeypatch.undo()
    dask.config.refresh()


def test_environment_overrides_config_defaults(config_env, monkeypatch):
    assert config.get("retries") == 2 and config.get("cache") == "auto"
    config_env(DASK_LABELSCAN__RETRIES="5", DASK_LABELSCAN__ISSUES_PER_PART="1234")
    assert config.get("retries") == 5 and config.get("issues-per-part") == 1234
    assert config.get("retries", 1) == 1   # an explicit value wins

    seen = {}

    def fake_run_scan(input_path, out_path, **kwargs):
        seen.update(kwargs)
        return {"num_rows": 0, "num_issues": 0}

    monkeypatch.setattr(labelscan.api, "run_scan", fake_run_scan)
    labelscan.scan("in/", "out/")
    assert seen["retries"] == 5 and seen["issues_per_part"] == 1234 and seen["cache"] == "auto"
    labelscan.scan("in/", "out/", retries=0)
    assert seen["retries"] == 0
    with dask.config.set({"labelscan.cache": False}):
        labelscan.scan("in/", "out/")
    assert seen["cache"] is False


def test_config_file_is_registered():
    assert Path(config.DEFAULTS_PATH).name == "labelscan.yaml"
    assert set(config.DEFAULTS["labelscan"]) >= {"retries", "rows-per-partition", "cache", "issues-per-part",
                                                 "timeout", "report"}


# ---------------------------------------------------------------------------------------------
# labelscan run, end to end


def test_run_demo_job_end_to_end(tmp_path, monkeypatch):
    """The shipped demo job on a fresh directory: generates its input, scans, logs JSON, profiles."""
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "reports" / "perf.html"
    result = invoke("run", REPO / "jobs" / "demo.yaml", "--set", "generate.rows=4000", "--set",
                    "resources.threads_per_worker=2", "--log-format", "json", "--performance-report", report,
                    "--top", "3")
    assert result.exit_code == 0, result.output
    scan = labelscan.open_scan(str(tmp_path / "labelscan-demo" / "scan-job"))
    assert scan.summary["num_rows"] == 4000 and scan.num_issues > 0
    assert (tmp_path / "labelscan-demo" / "data").is_dir()
    assert "top 3 issues" in result.stdout

    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    events = [record["event"] for record in records]
    assert events[0] == "start" and "cluster" in events and events[-2:] == ["done", "performance_report"]
    assert all(record["job"] == "demo" and record["time"] and record["level"] for record in records)
    cluster = records[events.index("cluster")]
    assert cluster["started"] is True and cluster["dashboard"].startswith("http")
    stages = [record["stage"] for record in records if record["event"] == "stage"]
    assert stages == list(STAGES), stages
    done = records[events.index("done")]
    assert done["num_issues"] == scan.num_issues
    assert set(STAGES) | {"plan", "total"} <= set(done["timings"]) == set(scan.summary["timings"])

    text = report.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") or "<html" in text[:500].lower()
    assert "labelscan-" in text   # the task stream names the scan's tasks

    # the same job again, quiet (cron): one line on stdout, nothing on stderr
    again = invoke("run", REPO / "jobs" / "demo.yaml", "--set", "generate.rows=4000", "-q")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().endswith(f"{scan.num_issues} issues in 4000 rows") and not again.stderr


def test_scan_json_logs_an_error(tmp_path):
    result = invoke("scan", tmp_path / "none", tmp_path / "out", "--workers", "1", "--log-format", "json")
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [record["event"] for record in records] == ["start", "cluster", "error"]
    assert records[-1]["exit_code"] == 3 and "no such file or directory" in records[-1]["message"]
    assert result.stderr.splitlines()[-1].startswith("error: ")   # the plain line stays last


# ---------------------------------------------------------------------------------------------
# progress display


def test_task_stages():
    assert task_stage("labelscan-read-0a1b2c3d4e5f6a7b-0") == "read"
    assert task_stage("labelscan-thresholds-merge-0a1b2c3d4e5f6a7b-3") == "thresholds"
    assert task_stage("labelscan-cutoffs-resolve-0a1b2c3d4e5f6a7b-0") == "cutoffs"
    assert task_stage("labelscan-rank-histogram-0a1b2c3d4e5f6a7b-1") == "rank"
    assert task_stage("other-1") is None and task_stage(("x", 1)) is None


class _State:
    def __init__(self, status):
        self.status = status


class _FakeClient:
    def __init__(self):
        self.futures = {}


def test_live_progress_counts_tasks():
    import io

    client, stream = _FakeClient(), io.StringIO()
    client.futures["labelscan-read-0a1b2c3d4e5f6a7b-9"] = _State("finished")   # before: not counted
    with ScanProgress(client, stream, live=True) as progress:
        time.sleep(0.5)   # no task of the scan yet: it is planning
        assert re.search(r"plan\s+\[ {20}\]\s+0/0\s+tasks\s+0\.[2-9] s", stream.getvalue()), stream.getvalue()
        for i in range(4):
            client.futures[f"labelscan-read-0a1b2c3d4e5f6a7b-{i}"] = _State("finished" if i < 3 else "pending")
        time.sleep(0.5)
        assert re.search(r"read\s+\[#{15} {5}\]\s+3/4\s+tasks", stream.getvalue()), stream.getvalue()
        client.futures.clear()   # released after gather: counted as finished
        progress("read", 0.25)
    assert "  read             0.25 s  (4 tasks)\n" in stream.getvalue()

    quiet_stream = io.StringIO()
    with ScanProgress(None, quiet_stream, live=False) as progress:
        progress("joint", 1.5)
    assert quiet_stream.getvalue() == "  joint            1.50 s\n"


def test_json_log_lines():
    import io

    stream = io.StringIO()
    log = JsonLog(stream, command="scan")
    log("read", 0.5)
    log.emit("done", num_issues=3)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "stage" and first["stage"] == "read" and first["seconds"] == 0.5
    assert first["command"] == "scan" and second["num_issues"] == 3


def test_operations_doc_lists_every_task_prefix():
    doc = (REPO / "docs" / "operations.md").read_text()
    names = set()
    for module in ("engine.py", "scan.py"):
        source = (REPO / "labelscan" / module).read_text()
        names |= set(re.findall(r'runner\.(?:map|submit|reduce)\(\s*"([a-z-]+)"', source))
    assert names, "no task names found"
    missing = sorted(name for name in names if f"labelscan-{name}`" not in doc)
    assert not missing, f"docs/operations.md does not list the task prefixes {missing}"
    for key in config.DEFAULTS["labelscan"]:
        assert f"labelscan.{key}" in doc, f"docs/operations.md does not list config key labelscan.{key}"
    assert os.path.exists(REPO / "labelscan" / "labelscan.yaml")


def test_every_unset_environment_variable_is_reported_at_once():
    with pytest.raises(JobError) as caught:
        load_job(str(REPO / "jobs" / "nightly-s3.yaml"), environ={})
    message = str(caught.value)
    for variable in ("DASK_SCHEDULER_ADDRESS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL"):
        assert f"environment variable {variable} is not set" in message, message
