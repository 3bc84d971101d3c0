"""The files that run the pipeline on a cluster: the image (``infra/docker``), the KubeRay
manifests (``infra/k8s``), the SLURM script and DeepSpeed hostfile (``infra/slurm``).

None of them can run here (no Docker, Kubernetes, SLURM or GPU), so each is held to what it
must agree with: the image installs the pins with the Makefile's own commands; the manifests
validate against the KubeRay CRDs' schemas (unknown fields rejected, as the API server's
strict field validation does) and mount what the paths resolver reads; every ``fsp`` command
line they or the SLURM script run passes ``fsp <stage> --dry-run``; the SLURM script runs
against stand-ins for ``srun``, ``ray``, ``torchrun`` and ``fsp``, SIGTERM included.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from typer.testing import CliRunner

from infra import paths
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
K8S = ROOT / "infra" / "k8s"
SBATCH = ROOT / "infra" / "slurm" / "train.sbatch"
HOSTFILE = ROOT / "infra" / "slurm" / "hostfile.example"
CRDS = SHARED / "schemas" / "kuberay"
#: Variables of infra/paths.py a container must set to its mounts.
MOUNT_ENVS = (paths.ENV_DATA_ROOT, paths.ENV_MODELS_DIR, paths.ENV_OUTPUT_DIR)
#: pip flags that change output or caching only.
QUIET_FLAGS = {"-q", "--quiet", "--no-cache-dir"}


# --- fsp --dry-run ---------------------------------------------------------------------------


def fsp_commands() -> set[str]:
    import typer

    from pipelines.cli import app

    return set(typer.main.get_command(app).commands)


def dry_run(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """``fsp <argv> --dry-run`` in process: asserts exit status 0, returns the resolved config."""
    from pipelines.cli import app

    assert argv[0] in {"prepare", "train", "evaluate"}, argv
    result = CliRunner().invoke(app, [argv[0], "--dry-run", *argv[1:]], env=env)
    assert result.exit_code == 0, (argv, result.output)
    return yaml.safe_load(result.stdout)


def test_dry_run_rejects_a_mangled_override():
    from pipelines.cli import app

    argv = ["train", "--dry-run", "--params", str(ROOT / "params.yaml")]
    result = CliRunner().invoke(app, [*argv, "--set", "train.ray.workerz=2"])
    assert result.exit_code == 2
    assert "workerz" in result.output


# --- the image -------------------------------------------------------------------------------


@functools.cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            instruction, _, args = buf.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
        buf = ""
    return tuple(out)


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def env_of_dockerfile() -> dict[str, str]:
    env = {}
    for args in instructions("ENV"):
        env.update(tok.split("=", 1) for tok in shlex.split(args))
    return env


def pip_installs(shell: str) -> list[list[str]]:
    """Arguments of each ``pip install`` in a shell command line, quiet flags dropped."""
    found = []
    for part in re.split(r"&&|\|\||;", shell):
        tokens = shlex.split(part)
        for i in range(len(tokens) - 1):
            if Path(tokens[i]).name in {"pip", "pip3"} and tokens[i + 1] == "install":
                found.append([t for t in tokens[i + 2 :] if t not in QUIET_FLAGS])
    return found


def dockerfile_pip_installs() -> list[tuple[int, list[str]]]:
    """(instruction index, pip arguments) of every ``pip install`` the image runs."""
    out = []
    for i, (instruction, args) in enumerate(dockerfile()):
        if instruction == "RUN":
            run = " ".join(t for t in shlex.split(args) if not t.startswith("--mount="))
            out += [(i, cmd) for cmd in pip_installs(run)]
    return out


def makefile_pip_installs() -> list[list[str]]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    return [cmd for line in lines if "pip install" in line for cmd in pip_installs(line.strip())]


def test_dockerfile_installs_the_pins_with_the_makefiles_commands():
    make = makefile_pip_installs()
    image = dockerfile_pip_installs()
    # the project with its extras, the --no-deps pair; then setup-gpu: the gpu extra and the
    # onnxruntime-gpu reinstall
    assert len(make) == 4, make
    positions = []
    for cmd in make:
        found = [i for i, args in image if args == cmd]
        assert found, f"the image does not run `pip install {shlex.join(cmd)}`"
        positions.append(found[-1])
    assert positions[0] != positions[1]
    assert positions[0] < positions[2] <= positions[3]  # the GPU swap after the project
    for _, args in image:  # nothing is installed outside the pins
        assert any(args[j : j + 2] == ["-c", "constraints.txt"] for j in range(len(args))), args
    # the project's own install comes after the whole tree is in the image
    copy_all = [i for i, (ins, args) in enumerate(dockerfile()) if ins == "COPY" and args == ". ."]
    assert copy_all and positions[0] > copy_all[0]


def test_base_image_is_the_cuda_release_of_the_pinned_torch():
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    # the installed build, read without importing torch: version.py holds its CUDA release
    assert importlib.metadata.version("torch") == pins["torch"]
    version_py = Path(importlib.util.find_spec("torch").origin).with_name("version.py")
    cuda = re.search(r"^cuda\b.*= '([\d.]+)'$", version_py.read_text(), re.M).group(1)
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    assert args["CUDA_IMAGE"].startswith(f"nvidia/cuda:{cuda}."), (args["CUDA_IMAGE"], cuda)
    assert instructions("FROM") == ["${CUDA_IMAGE}"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert args["PYTHON"] in SpecifierSet(requires)


def image_user() -> tuple[str, int]:
    """(name, uid) of the image's user, from its last USER and the useradd that made it."""
    user = instructions("USER")[-1]
    for run in instructions("RUN"):
        for part in re.split(r"&&|;", run):
            tokens = shlex.split(part)
            if tokens[:1] == ["useradd"] and tokens[-1] == user and "--uid" in tokens:
                return user, int(tokens[tokens.index("--uid") + 1])
    raise AssertionError(f"USER {user} is never created with a --uid")


def test_image_runs_as_a_non_root_user():
    user, uid = image_user()
    assert user not in {"root", "0"} and uid != 0


def test_image_mounts_what_the_paths_resolver_reads():
    env = env_of_dockerfile()
    volumes = set(json.loads(instructions("VOLUME")[-1]))
    mounts = {env[name] for name in MOUNT_ENVS}
    assert mounts == volumes and all(m.startswith("/") for m in mounts)
    assert paths.ENV_TRACKING_URI not in env  # the tracking server comes at run time
    user, _ = image_user()
    chown = [a for a in instructions("RUN") if f"chown {user}:{user}" in a]
    assert chown and all(m in chown[0] for m in mounts)


def dockerignored(path: str) -> bool:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in (p for p in patterns if p and not p.startswith(("#", "!"))):
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest():
    needed = ["pyproject.toml", "README.md", "constraints.txt", "requirements-nodeps.txt"]
    needed += ["params.yaml", "pipelines/cli.py", "infra/paths.py", "training/train.py"]
    assert not [p for p in needed if dockerignored(p)]
    dropped = [".venv/bin/python", "outputs/train/generator.pt", ".git/HEAD", ".dvc/cache/x"]
    dropped += ["training/__pycache__/train.cpython-311.pyc"]
    assert all(dockerignored(p) for p in dropped)


# --- KubeRay manifests -----------------------------------------------------------------------


def strict(schema: dict) -> dict:
    """The schema with unknown fields rejected wherever the CRD lists the fields (the API
    server prunes or, with strict field validation, rejects them; jsonschema would accept)."""
    schema = copy.deepcopy(schema)

    def close(node: dict) -> None:
        open_ = "additionalProperties" in node or "x-kubernetes-preserve-unknown-fields" in node
        if "properties" in node and not open_:
            node["additionalProperties"] = False
        children = [*node.get("properties", {}).values(), node.get("items")]
        children += [node.get("additionalProperties"), *node.get("anyOf", [])]
        for child in children:
            if isinstance(child, dict):
                close(child)

    close(schema)
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): strict openAPIV3Schema} of the storage version of each CRD."""
    out = {}
    for path in sorted(CRDS.glob("ray.io_*.yaml")):
        # the C loader when PyYAML has it: the CRDs are 40,000 lines
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("storage"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                out[key] = strict(version["schema"]["openAPIV3Schema"])
    assert {kind for _, kind in out} >= {"RayCluster", "RayJob"}, CRDS
    return out


def pod_spec_schema() -> dict:
    """Kubernetes' PodSpec, as the RayCluster CRD embeds it."""
    cluster = crd_schemas()[("ray.io/v1", "RayCluster")]
    head = cluster["properties"]["spec"]["properties"]["headGroupSpec"]
    return head["properties"]["template"]["properties"]["spec"]


def pvc_spec_schema() -> dict:
    """Kubernetes' PersistentVolumeClaimSpec, as the PodSpec embeds it (ephemeral volumes)."""
    volume = pod_spec_schema()["properties"]["volumes"]["items"]["properties"]
    return volume["ephemeral"]["properties"]["volumeClaimTemplate"]["properties"]["spec"]


@functools.cache
def manifests() -> tuple[tuple[str, dict], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(docs)


def of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def validate(doc: dict) -> None:
    jsonschema.Draft4Validator(crd_schemas()[(doc["apiVersion"], doc["kind"])]).validate(doc)


RAY_KINDS = {"RayCluster", "RayJob"}


@pytest.mark.parametrize(
    "doc",
    [d for _, d in manifests() if d["kind"] in RAY_KINDS],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_ray_manifest_validates_against_the_kuberay_crd(doc):
    validate(doc)


def test_every_manifest_is_of_a_checked_kind():
    kinds = {doc["kind"] for _, doc in manifests()}
    assert kinds <= RAY_KINDS | {"Pod", "PersistentVolumeClaim", "ConfigMap"}, kinds
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "ConfigMap"} <= kinds


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


def _head_container(cluster: dict) -> dict:
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


MANGLES = {
    "unknown field": lambda c: _rename(c["spec"], "workerGroupSpecs", "workerGroupSpec"),
    "wrong type": lambda c: c["spec"]["workerGroupSpecs"][0].update(replicas="two"),
    "missing required field": lambda c: c["spec"]["headGroupSpec"].pop("template"),
    "bad quantity": lambda c: _head_container(c)["resources"]["limits"].update(cpu="lots"),
    "unknown container field": lambda c: _head_container(c).update(mountPath="/data"),
}


@pytest.mark.parametrize("mangle", sorted(MANGLES))
def test_a_mangled_raycluster_fails_validation(mangle):
    cluster = copy.deepcopy(of_kind("RayCluster")[0])
    MANGLES[mangle](cluster)
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster)


def test_a_mangled_rayjob_fails_validation():
    job = copy.deepcopy(of_kind("RayJob")[0])
    job["spec"]["entrypoint"] = shlex.split(job["spec"]["entrypoint"])
    with pytest.raises(jsonschema.ValidationError):
        validate(job)


def test_core_objects_validate_against_the_embedded_kubernetes_schemas():
    for pod in of_kind("Pod"):
        assert pod["apiVersion"] == "v1"
        jsonschema.Draft4Validator(pod_spec_schema()).validate(pod["spec"])
    for claim in of_kind("PersistentVolumeClaim"):
        assert claim["apiVersion"] == "v1"
        jsonschema.Draft4Validator(pvc_spec_schema()).validate(claim["spec"])
        assert "ReadWriteMany" in claim["spec"]["accessModes"]  # every node mounts it
    for config in of_kind("ConfigMap"):
        assert config["apiVersion"] == "v1"
        assert all(isinstance(v, str) for v in config["data"].values())


def pod_specs() -> list[tuple[str, dict]]:
    """(where, PodSpec) of every pod the manifests make."""
    specs = [(f"Pod/{p['metadata']['name']}", p["spec"]) for p in of_kind("Pod")]
    for cluster in of_kind("RayCluster"):
        specs.append(("head", cluster["spec"]["headGroupSpec"]["template"]["spec"]))
        for group in cluster["spec"]["workerGroupSpecs"]:
            specs.append((group["groupName"], group["template"]["spec"]))
    return specs


def test_pods_run_the_image_with_its_mounts_and_the_tracking_config():
    env = env_of_dockerfile()
    _, uid = image_user()
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    configs = {c["metadata"]["name"]: c["data"] for c in of_kind("ConfigMap")}
    images = set()
    for where, spec in pod_specs():
        assert spec["securityContext"]["runAsUser"] == uid, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            images.add(container["image"])
            given = {e["name"]: e.get("value") for e in container["env"]}
            assert {n: given.get(n) for n in MOUNT_ENVS} == {n: env[n] for n in MOUNT_ENVS}, where
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            for name in MOUNT_ENVS:
                volume = volumes[mounts[env[name]]["name"]]
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
            refs = [r["configMapRef"]["name"] for r in container["envFrom"] if "configMapRef" in r]
            assert refs and all(paths.ENV_TRACKING_URI in configs[r] for r in refs), where
    assert len(images) == 1, images


def test_rayjobs_run_on_the_raycluster_of_the_pinned_ray():
    (cluster,) = of_kind("RayCluster")
    ray_pin = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert cluster["spec"]["rayVersion"] == ray_pin.group(1)
    jobs = of_kind("RayJob")
    assert {j["metadata"]["name"] for j in jobs} >= {"fsp-prepare", "fsp-train"}
    for job in jobs:
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}


def entrypoint(job: dict) -> list[str]:
    """The job's ``fsp`` arguments, ``--params`` pointed from the image's copy to this one."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "fsp" and argv[1] in fsp_commands(), argv
    i = argv.index("--params")
    assert argv[i + 1] == f"{instructions('WORKDIR')[-1]}/params.yaml"
    argv[i + 1] = str(ROOT / "params.yaml")
    return argv[1:]


@functools.cache
def job_config(name: str) -> dict:
    """The resolved config of a RayJob's entrypoint, in the environment its pods have."""
    (job,) = [j for j in of_kind("RayJob") if j["metadata"]["name"] == name]
    (config,) = of_kind("ConfigMap")
    image_env = env_of_dockerfile()
    env = {**config["data"], **{name: image_env[name] for name in MOUNT_ENVS}}
    return dry_run(entrypoint(job), env=env)


def test_rayjob_entrypoints_pass_fsp_dry_run():
    for job in of_kind("RayJob"):
        job_config(job["metadata"]["name"])


def test_prepare_job_restores_the_paper_settings():
    """Every setting params.yaml holds only for the sample set is back at the code's
    default (the papers') in the VGGFace2 job."""
    from preprocessing.config import PrepareConfig
    from tests.infra.test_config import DELIBERATE, _leaves

    resolved = job_config("fsp-prepare")["prepare"]
    default = PrepareConfig(sources=resolved["sources"]).model_dump(mode="json")
    given, default = dict(_leaves(resolved, "prepare.")), dict(_leaves(default, "prepare."))
    sample_only = [k for k in DELIBERATE if k.startswith("prepare.")]
    assert sample_only
    assert {k: given[k] for k in sample_only} == {k: default[k] for k in sample_only}


def _quantity(value) -> float:
    """A Kubernetes quantity ("64", "500m", "512Gi") as a number."""
    value = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    units.update(Ki=2**10, Mi=2**20, Gi=2**30, Ti=2**40)
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def cluster_capacity() -> tuple[float, float]:
    """(CPUs, GPUs) Ray schedules tasks on: worker groups, plus the head's unless num-cpus 0."""
    (cluster,) = of_kind("RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus = _quantity(head["rayStartParams"].get("num-cpus", limits["cpu"]))
    gpus = _quantity(limits.get("nvidia.com/gpu", 0))
    for group in cluster["spec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus += group["replicas"] * _quantity(limits["cpu"])
        gpus += group["replicas"] * _quantity(limits.get("nvidia.com/gpu", 0))
    return cpus, gpus


def test_jobs_fit_the_cluster():
    cpus, gpus = cluster_capacity()
    train = job_config("fsp-train")["train"]["ray"]
    assert train["workers"] >= 1 and train["gpus_per_worker"] >= 1
    assert train["workers"] * train["gpus_per_worker"] <= gpus
    assert train["workers"] * train["cpus_per_worker"] <= cpus
    prepare = job_config("fsp-prepare")["prepare"]["ray"]
    # actors leave CPUs free for Ray Data's read tasks (a full pool can deadlock)
    assert prepare["num_actors"] * prepare["cpus_per_actor"] < cpus
    assert prepare["num_actors"] * prepare["gpus_per_actor"] <= gpus


# --- SLURM -----------------------------------------------------------------------------------


def test_sbatch_script_is_valid_bash_with_the_time_limit_signal():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    directives = re.findall(r"^#SBATCH (\S+)", SBATCH.read_text(), re.M)
    assert "--signal=B:TERM@120" in directives and "--requeue" in directives


STUB_LOG_FUNCTION = 'log() { echo "$*" >> "$STUB_LOG/commands"; }'
STUBS = {
    # Slurm: srun runs its command here; requeue is recorded; squeue tells the time left
    "bin/srun": 'log srun "$@"; while [[ $1 == -* ]]; do shift; done; exec "$@"',
    "bin/scontrol": 'log scontrol "$@"',
    "bin/squeue": 'echo "$STUB_TIME_LEFT"',
    # the venv: `ray start` blocks until stopped; `ray job submit` runs its entrypoint
    "venv/bin/ray": """log ray "$@"
case "$1 $2" in
  "start "*) trap 'kill $s 2>/dev/null; exit 0' TERM; sleep 30 & s=$!; wait $s ;;
  "list nodes") for i in $(seq "$SLURM_NNODES"); do echo "{\\"node_id\\": \\"n$i\\"}"; done ;;
  "job submit") while [[ $1 != -- ]]; do shift; done; shift; exec "$@" ;;
  "job stop") kill -TERM "$(cat "$STUB_LOG/fsp.pid")" ;;
esac""",
    "venv/bin/torchrun": 'log torchrun "$@"; while [[ $1 == -* ]]; do shift; done; exec "$@"',
    # fsp records its arguments; with FSP_STUB_BLOCK=<stage> that stage runs until SIGTERM
    "venv/bin/fsp": """{ printf '%s\\0' "$@"; echo; } >> "$STUB_LOG/fsp.calls"
if [[ $1 == "$FSP_STUB_BLOCK" ]]; then
  trap 'touch "$STUB_LOG/fsp.term"; kill $s; exit 143' TERM
  sleep 30 & s=$!; echo $$ > "$STUB_LOG/fsp.pid"; wait $s
fi""",
}


def start_sbatch(tmp: Path, launcher: str, **env) -> tuple[subprocess.Popen, Path]:
    """Start train.sbatch as sbatch would on node01 of 2 nodes × 8 GPUs, with stand-ins."""
    log = tmp / "log"
    log.mkdir()
    for rel, body in STUBS.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/usr/bin/env bash\n{STUB_LOG_FUNCTION}\n{body}\n")
        path.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "FSP_", "RAY_"))}
    base.update(
        PATH=f"{tmp / 'bin'}:{os.environ['PATH']}",
        STUB_LOG=str(log),
        STUB_TIME_LEFT="1:00",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_GPUS_ON_NODE="8",
        SLURM_CPUS_PER_TASK="64",
        SLURMD_NODENAME="node01",
        SLURM_SUBMIT_DIR=str(ROOT),
        FSP_VENV=str(tmp / "venv"),
        FSP_HEAD_IP="10.0.0.1",
        FSP_LAUNCHER=launcher,
    )
    base.update(env)
    proc = subprocess.Popen(["bash", str(SBATCH)], env=base, start_new_session=True)
    return proc, log


def finish(proc: subprocess.Popen, timeout: float = 30) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fsp_calls(log: Path) -> list[list[str]]:
    lines = (log / "fsp.calls").read_text().splitlines()
    return [line.split("\0")[:-1] for line in lines]


@pytest.mark.parametrize("launcher", ["ray", "torchrun"])
def test_sbatch_runs_fsp_commands_that_pass_dry_run(tmp_path, launcher):
    proc, log = start_sbatch(tmp_path, launcher)
    assert finish(proc) == 0
    calls = fsp_calls(log)
    assert [c[0] for c in calls] == ["prepare", "train"]
    resolved = {c[0]: dry_run(c) for c in calls}
    commands = (log / "commands").read_text()
    train = resolved["train"]["train"]["ray"]
    if launcher == "ray":
        assert "ray start --head --block --node-ip-address=10.0.0.1" in commands
        assert "ray start --block --address=10.0.0.1:6379" in commands  # the second node
        assert commands.count("ray job submit") == 2
        assert (train["workers"], train["gpus_per_worker"]) == (16, 1)
        assert train["workers"] * train["cpus_per_worker"] <= 2 * 64
    else:
        assert "torchrun --nnodes=2 --nproc_per_node=8" in commands
        assert "--rdzv_endpoint=10.0.0.1:29500" in commands
        assert train["workers"] == 0
    prepare = resolved["prepare"]["prepare"]["ray"]
    assert prepare["num_actors"] * prepare["cpus_per_actor"] < 64 * (2 if launcher == "ray" else 1)


@pytest.mark.parametrize(
    ("launcher", "time_left", "requeued"),
    [("ray", "1:00", True), ("torchrun", "1:00", True), ("torchrun", "2:00:00", False)],
)
def test_sbatch_forwards_sigterm_and_requeues_at_the_time_limit(
    tmp_path, launcher, time_left, requeued
):
    proc, log = start_sbatch(
        tmp_path, launcher, FSP_STAGES="train", FSP_STUB_BLOCK="train", STUB_TIME_LEFT=time_left
    )
    deadline = time.monotonic() + 20
    while not (log / "fsp.pid").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (log / "fsp.pid").exists(), "train never started"
    proc.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 does
    assert finish(proc) == 143
    assert (log / "fsp.term").exists()  # the training process got the SIGTERM
    commands = (log / "commands").read_text()
    assert ("ray job stop" in commands) == (launcher == "ray")
    assert ("scontrol requeue 4242" in commands) == requeued


def test_hostfile_example_parses_as_a_deepspeed_hostfile():
    from deepspeed.launcher.runner import _parse_hostfile

    pool = _parse_hostfile(HOSTFILE.read_text().splitlines())
    assert len(pool) >= 2 and all(slots >= 1 for slots in pool.values())
