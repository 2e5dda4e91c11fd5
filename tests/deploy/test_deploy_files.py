"""The deployment files (Dockerfile, Compose, Kubernetes, .env.example) agree with the code.

No Docker engine or cluster runs here, so the files are parsed and checked against what
mailer really offers: its CLI commands, its Settings, its port, its health endpoint, the
install script CI runs, the Compose specification and the Kubernetes API schemas.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from mailer.cli import app
from mailer.config import AppEnv, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_LOCAL_FILE = ROOT / "docker-compose.local.yml"
# The worker waits SHUTDOWN_TIMEOUT for in-flight sends, then up to 5 s more to close
# (mailer/worker/main.py); the platform must not SIGKILL it before that.
WORKER_CLOSE_MARGIN = 5.0
PLACEHOLDER_SECRET = "placeholder-unsubscribe-secret-0123456789"
# Environment variables a Dockerfile may set that are not mailer settings.
NON_SETTINGS_IMAGE_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
NON_SETTINGS_BUILD_ENV = {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
# The probes of the Node service's Kubernetes example, which mailer keeps unchanged (operators
# moving from it keep their timings); docs/production.md states them too.
SPEC_LIVENESS = {
    "httpGet": {"path": "/api/v1/health", "port": 3000},
    "initialDelaySeconds": 30,
    "periodSeconds": 10,
}
SPEC_READINESS = {
    "httpGet": {"path": "/api/v1/ready", "port": 3000},
    "initialDelaySeconds": 20,
    "periodSeconds": 5,
}


# --- what mailer offers ------------------------------------------------------------------


def cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def settings_env_keys() -> dict[str, str]:
    """Environment variable name -> the keyword Settings accepts for it."""
    keys: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        keys[name.upper()] = name
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                keys[choice.upper()] = choice
    return keys


class _GivenOnly(Settings):
    """Settings from the given values alone: no process environment, no .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Validate an environment exactly as mailer would at start (raises on a bad value)."""
    keys = settings_env_keys()
    unknown = set(env) - set(keys)
    assert not unknown, f"not mailer settings: {sorted(unknown)}"
    values: dict[str, Any] = {keys[name]: value for name, value in env.items()}
    return _GivenOnly(**values)


def stop_budget(settings: Settings) -> float:
    return settings.shutdown_timeout + WORKER_CLOSE_MARGIN


# --- Dockerfile ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(v) for v in value]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Instruction]]:
    """Global ARG defaults and the instructions, each tagged with its stage name."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    global_args: dict[str, str] = {}
    instructions: list[Instruction] = []
    stage = ""
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(logical))
        elif keyword == "ARG" and not stage:
            name, _, default = args.partition("=")
            global_args[name] = default
        instructions.append(Instruction(stage, keyword, args))
    return global_args, instructions


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Instruction]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def stage_of(instructions: list[Instruction], stage: str, keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage and i.keyword == keyword]


def only(instructions: list[Instruction], stage: str, keyword: str) -> Instruction:
    found = stage_of(instructions, stage, keyword)
    assert len(found) == 1, f"expected one {keyword} in stage {stage!r}, found {len(found)}"
    return found[0]


def env_of(instructions: list[Instruction], stage: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage_of(instructions, stage, "ENV"):
        for word in shlex.split(instruction.args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def final_stage(instructions: list[Instruction]) -> str:
    return [i for i in instructions if i.keyword == "FROM"][-1].stage


def test_dockerfile_is_multi_stage_on_python_311_slim(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    global_args, instructions = dockerfile
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert [f.stage for f in froms] == ["builder", "runtime"]
    for instruction in froms:
        image = instruction.args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)
        # Same base in both stages: the venv's interpreter links must resolve in the runtime.
        assert image.split("@")[0] == "python:3.11-slim"  # a pinned digest may follow


def test_builder_runs_the_install_script_ci_runs(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    _, instructions = dockerfile
    runs = " ; ".join(i.args for i in stage_of(instructions, "builder", "RUN"))
    assert re.search(r"(^|[\s;&])(bash\s+)?(\./)?deploy/install\.sh\s+/opt/venv\s+runtime\b", runs)
    # ...and CI goes through the same script: .ci/run -> scripts/lib.sh -> deploy/install.sh.
    ci = (ROOT / ".ci" / "run").read_text()
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    assert "source scripts/lib.sh" in ci
    assert re.search(r"^ensure_venv\b", ci, re.M)
    assert "deploy/install.sh" in lib


def test_builder_copies_the_layout_install_sh_expects(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    """install.sh installs its own parent directory: the copied tree must be a repository."""
    _, instructions = dockerfile
    workdir = PurePosixPath(only(instructions, "builder", "WORKDIR").args)
    copied: dict[str, PurePosixPath] = {}
    for instruction in stage_of(instructions, "builder", "COPY"):
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        sources, dest = words[:-1], words[-1]
        for source in sources:
            if dest.endswith("/") or dest == ".":
                target = workdir / dest / PurePosixPath(source).name
            else:
                target = workdir / dest
            copied[source] = PurePosixPath(os.path.normpath(str(target)))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", pyproject["project"]["readme"], "src", "deploy/install.sh"]
    for path in needed:
        assert (ROOT / path).exists()
        assert copied.get(path) == workdir / path, f"{path} not copied to {workdir / path}"


def test_runtime_stage_runs_mailer_as_non_root(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    _, instructions = dockerfile
    stage = final_stage(instructions)
    assert stage == "runtime"
    copies = [i.args.split() for i in stage_of(instructions, stage, "COPY")]
    assert ["--from=builder", "/opt/venv", "/opt/venv"] in copies
    env = env_of(instructions, stage)
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert env["HOST"] == "0.0.0.0"
    user = only(instructions, stage, "USER").args
    uid = user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) != 0
    assert only(instructions, stage, "WORKDIR").args.startswith("/")
    assert only(instructions, stage, "STOPSIGNAL").args == "SIGTERM"
    entrypoint = only(instructions, stage, "ENTRYPOINT").exec_form()
    assert entrypoint == ["mailer"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "mailer" in pyproject["project"]["scripts"]
    assert only(instructions, stage, "CMD").exec_form() == ["api"]


def test_image_env_names_are_settings(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    _, instructions = dockerfile
    keys = settings_env_keys()
    runtime_env = env_of(instructions, "runtime")
    assert set(runtime_env) - set(keys) <= NON_SETTINGS_IMAGE_ENV
    assert set(env_of(instructions, "builder")) <= NON_SETTINGS_BUILD_ENV
    settings_from_env({k: v for k, v in runtime_env.items() if k in keys})


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    args = only(instructions, "runtime", "HEALTHCHECK").args
    options, _, command = args.partition("CMD ")
    assert all(word.startswith("--") for word in options.split())
    return [str(v) for v in json.loads(command)]


def test_healthcheck_uses_python_urllib_on_the_health_endpoint(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    command = healthcheck_command(dockerfile[1])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "/api/v1/health" in command[2]


def test_dockerignore_keeps_secrets_out_and_sources_in(
    dockerfile: tuple[dict[str, str], list[Instruction]],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            candidates = [pattern, pattern.removeprefix("**/")]
            if any(fnmatch(prefix, c) for prefix in prefixes for c in candidates):
                result = not negate
        return result

    for secret in (".env", ".env.production", ".venv", ".git", "data/mailer.db"):
        assert ignored(secret), secret
    for instruction in stage_of(dockerfile[1], "builder", "COPY"):
        for source in instruction.args.split()[:-1]:
            assert not ignored(source), f"{source} is copied but excluded by .dockerignore"
    for path in ("src/mailer/cli/main.py", "src/mailer/migrations/env.py"):
        assert not ignored(path)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def running_api(tmp_path: Path, free_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`mailer api` on 127.0.0.1:<free port>, on a SQLite file, with a clean environment."""
    keys = settings_env_keys()
    env = {k: v for k, v in os.environ.items() if k.upper() not in keys}
    env.update(
        APP_ENV="test",
        HOST="127.0.0.1",
        PORT=str(free_port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'mailer.db'}",
        OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "api"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run_check(command: list[str], port: int) -> int:
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def test_healthchecks_pass_on_a_running_api_and_fail_once_it_stopped(
    dockerfile: tuple[dict[str, str], list[Instruction]],
    running_api: subprocess.Popen[bytes],
    free_port: int,
) -> None:
    image_check = [sys.executable, *healthcheck_command(dockerfile[1])[1:]]
    compose_test = load_compose(COMPOSE_FILE)["services"]["api"]["healthcheck"]["test"]
    assert compose_test[:2] == ["CMD", "python"]
    compose_check = [
        sys.executable,
        *(word.replace(":3000/", f":{free_port}/") for word in compose_test[2:]),
    ]
    deadline = time.monotonic() + 60
    while run_check(image_check, free_port) != 0:
        assert running_api.poll() is None, running_api.stdout.read() if running_api.stdout else ""
        assert time.monotonic() < deadline, "mailer api never answered its health check"
        time.sleep(0.2)
    assert run_check(compose_check, free_port) == 0
    # STOPSIGNAL: SIGTERM drains the API and runs its shutdown (uvicorn then re-raises the
    # signal, so the exit status says SIGTERM).
    running_api.send_signal(signal.SIGTERM)
    assert running_api.wait(timeout=30) in (0, -signal.SIGTERM)
    assert running_api.stdout is not None
    assert b"api_stopped" in running_api.stdout.read()
    assert run_check(image_check, free_port) != 0
    assert run_check(compose_check, free_port) != 0


# --- Compose -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name", "op", "arg")
        current = variables.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if missing and op in (":-", "-"):
            return str(arg)
        if missing and op in (":?", "?"):
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def load_compose(*files: Path, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Load, interpolate and merge Compose files the way `docker compose -f a -f b` does."""
    merged: dict[str, Any] = {}
    for path in files:
        data = yaml.safe_load(path.read_text())
        merged = merge(merged, interpolate(data, variables or {}))
    return merged


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for key, value in override.items():
            result[key] = merge(base[key], value) if key in base else value
        return result
    return override


def compose_schema_validator() -> jsonschema.protocols.Validator:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


def mailer_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if "build" in s}


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {k: str(v) for k, v in env.items()}


def duration_seconds(value: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize(
    "files", [(COMPOSE_FILE,), (COMPOSE_FILE, COMPOSE_LOCAL_FILE)], ids=["main", "local"]
)
def test_compose_files_follow_the_compose_specification(files: tuple[Path, ...]) -> None:
    validator = compose_schema_validator()
    for path in files:
        raw = yaml.safe_load(path.read_text())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(raw)]
        assert not errors, f"{path.name}: {errors}"
    errors = [e.message for e in validator.iter_errors(load_compose(*files))]
    assert not errors


@pytest.mark.parametrize(
    "files", [(COMPOSE_FILE,), (COMPOSE_FILE, COMPOSE_LOCAL_FILE)], ids=["main", "local"]
)
def test_compose_mailer_services_run_real_commands_with_valid_settings(
    files: tuple[Path, ...],
) -> None:
    compose = load_compose(*files)
    services = mailer_services(compose)
    assert set(services) == {"migrate", "api", "worker"}
    commands = cli_commands()
    images = {s["image"] for s in services.values()}
    assert images == {"mailer:latest"}
    for name, service in services.items():
        assert service["command"][0] in commands, name
        assert service["command"] == [name], name
        assert {"path": ".env", "required": False} in service["env_file"]
        env = service_env(service)
        # UNSUBSCRIBE_SECRET and PUBLIC_URL come from .env in production (validation
        # demands them).
        if env.get("APP_ENV") == AppEnv.PRODUCTION:
            env.setdefault("UNSUBSCRIBE_SECRET", PLACEHOLDER_SECRET)
            env.setdefault("PUBLIC_URL", "https://mail.example.com")
        settings = settings_from_env(env)
        assert settings.port == 3000
        assert settings.redis_url is not None
        db = urlsplit(settings.database_url)
        assert db.hostname in compose["services"]
        assert db.port == 5432
        assert urlsplit(settings.redis_url).hostname in compose["services"]
        if name != "api":
            # The image's HEALTHCHECK probes HTTP; only the api serves it.
            assert service["healthcheck"] == {"disable": True}, name


def test_compose_database_and_redis() -> None:
    compose = load_compose(COMPOSE_FILE)
    postgres, redis_service = compose["services"]["postgres"], compose["services"]["redis"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    db = urlsplit(service_env(compose["services"]["api"])["DATABASE_URL"])
    pg_env = postgres["environment"]
    assert (db.username, db.password, db.path) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        "/" + pg_env["POSTGRES_DB"],
    )
    assert redis_service["image"] == "redis:7"
    command = " ".join(redis_service["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis_service["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis_service["volumes"])


def test_compose_startup_order_and_ports() -> None:
    services = load_compose(COMPOSE_FILE)["services"]
    migrate, api, worker = services["migrate"], services["api"], services["worker"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in (api, worker):
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["ports"] == ["3000:3000"]
    assert "http://127.0.0.1:3000/api/v1/health" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_stop_grace_period_outlasts_graceful_shutdown(name: str) -> None:
    service = load_compose(COMPOSE_FILE)["services"][name]
    env = service_env(service)
    env.setdefault("UNSUBSCRIBE_SECRET", PLACEHOLDER_SECRET)
    env.setdefault("PUBLIC_URL", "https://mail.example.com")
    budget = stop_budget(settings_from_env(env))
    assert duration_seconds(service["stop_grace_period"]) > budget


def test_compose_local_mails_into_the_sinks_it_starts() -> None:
    compose = load_compose(COMPOSE_FILE, COMPOSE_LOCAL_FILE)
    services = compose["services"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert services["moto"]["image"].startswith("motoserver/moto")
    assert services["moto"]["profiles"] == ["ses-mock"]
    for name, service in mailer_services(compose).items():
        settings = settings_from_env(service_env(service))
        assert settings.mail_transport == "smtp", name
        assert settings.app_env is AppEnv.DEVELOPMENT
        assert settings.smtp_url is not None
        smtp = urlsplit(settings.smtp_url.get_secret_value())
        assert (smtp.hostname, smtp.port) == ("mailpit", 1025)  # Mailpit's SMTP port
        assert settings.aws_endpoint_url is not None
        ses = urlsplit(settings.aws_endpoint_url)
        assert ses.hostname == "moto"
        assert f"127.0.0.1:{ses.port}:{ses.port}" in services["moto"]["ports"]
    with_moto = load_compose(COMPOSE_FILE, COMPOSE_LOCAL_FILE, variables={"LOCAL_TRANSPORT": "ses"})
    worker_env = service_env(with_moto["services"]["worker"])
    assert settings_from_env(worker_env).mail_transport == "ses"


def test_no_compose_override_file_redirects_production_mail() -> None:
    """Compose merges docker-compose.override.yml into every plain `up`: keep sinks opt-in."""
    assert not (ROOT / "docker-compose.override.yml").exists()
    assert "mailpit" not in load_compose(COMPOSE_FILE)["services"]


# --- Kubernetes -------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def pod_specs() -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for _, d in k8s_documents()
        if d["kind"] in {"Deployment", "Job"}
    }


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets, with the example Secret's placeholder values."""
    config = k8s_object("ConfigMap", "mailer-config")["data"]
    secret = k8s_object("Secret", "mailer-secrets")["stringData"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "mailer-config"
        env.update(config)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "mailer-secrets"
        if ref["key"] in secret:
            env[item["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{ref['key']} is not in the example Secret"
    return env


def only_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def dockerfile_uid() -> int:
    _, instructions = parse_dockerfile((ROOT / "Dockerfile").read_text())
    return int(only(instructions, "runtime", "USER").args.split(":")[0])


@pytest.mark.parametrize(
    "name", [p.name for p in sorted(K8S_DIR.glob("*.yaml")) if p.name != "kustomization.yaml"]
)
def test_k8s_manifest_matches_the_kubernetes_schema(name: str) -> None:
    version = kubernetes_validate.latest_version()
    for document in yaml.safe_load_all((K8S_DIR / name).read_text()):
        kubernetes_validate.validate(document, version, strict=True)
        assert document["metadata"].get("namespace", "mailer") == "mailer"


def test_kustomization_applies_everything_but_the_secret_example_and_the_job() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == files - {"secret.example.yaml", "migrate-job.yaml"}
    images = {c["image"].split(":")[0] for s in pod_specs().values() for c in s["containers"]}
    assert images == {kustomization["images"][0]["name"]} == {"mailer"}


def test_k8s_api_deployment_as_original_spec() -> None:
    api = k8s_object("Deployment", "mailer-api")
    assert api["spec"]["replicas"] == 3
    container = only_container(api["spec"]["template"]["spec"])
    assert container["args"] == ["api"]
    assert container["ports"][0]["containerPort"] == 3000
    assert container["livenessProbe"] == SPEC_LIVENESS
    assert container["readinessProbe"] == SPEC_READINESS
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    database = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {
        "name": "mailer-secrets",
        "key": "database-url",
    }


def test_the_documented_probe_values_are_those_deployed() -> None:
    """docs/production.md tells operators the probe timings: they match the manifests'."""
    text = " ".join((ROOT / "docs" / "production.md").read_text().split())
    found = re.search(r"liveness (\d+) s delay / (\d+) s period, readiness (\d+) s / (\d+) s", text)
    assert found, "docs/production.md no longer states the probe timings"
    documented = tuple(int(v) for v in found.groups())
    assert documented == (
        SPEC_LIVENESS["initialDelaySeconds"],
        SPEC_LIVENESS["periodSeconds"],
        SPEC_READINESS["initialDelaySeconds"],
        SPEC_READINESS["periodSeconds"],
    )


def test_k8s_pods_run_real_commands_as_non_root_with_valid_settings() -> None:
    commands = cli_commands()
    expected = {
        "Deployment/mailer-api": "api",
        "Deployment/mailer-worker": "worker",
        "Job/mailer-migrate": "migrate",
    }
    specs = pod_specs()
    assert set(specs) == set(expected)
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"].get("runAsUser", dockerfile_uid()) == dockerfile_uid()
        container = only_container(spec)
        assert container["args"] == [expected[name]]
        assert container["args"][0] in commands
        assert "command" not in container, "keep the image's ENTRYPOINT (mailer)"
        settings = settings_from_env(container_env(container))
        assert settings.app_env is AppEnv.PRODUCTION
        assert not settings.is_sqlite
    assert specs["Job/mailer-migrate"]["restartPolicy"] in {"Never", "OnFailure"}


def test_k8s_config_and_secret_keys_are_settings() -> None:
    keys = settings_env_keys()
    assert set(k8s_object("ConfigMap", "mailer-config")["data"]) <= set(keys)
    for spec in pod_specs().values():
        for item in only_container(spec).get("env", []):
            assert item["name"] in keys
    secret = k8s_object("Secret", "mailer-secrets")
    for key, value in secret["stringData"].items():
        assert "CHANGE_ME" in value or "example" in value, f"{key}: not a placeholder"


def test_k8s_grace_periods_outlast_graceful_shutdown() -> None:
    for name in ("Deployment/mailer-api", "Deployment/mailer-worker"):
        spec = pod_specs()[name]
        container = only_container(spec)
        budget = stop_budget(settings_from_env(container_env(container)))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = pre_stop.get("command", [])
        if sleep[:1] == ["sleep"]:
            budget += float(sleep[1])
        assert spec["terminationGracePeriodSeconds"] > budget, name


def test_k8s_service_and_disruption_budgets_select_the_pods() -> None:
    api = k8s_object("Deployment", "mailer-api")
    worker = k8s_object("Deployment", "mailer-worker")
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service", "mailer-api")
    assert service["spec"]["selector"].items() <= api_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [3000]
    api_pdb = k8s_object("PodDisruptionBudget", "mailer-api")
    worker_pdb = k8s_object("PodDisruptionBudget", "mailer-worker")
    assert api_pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
    assert worker_pdb["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    assert 0 < api_pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    for deployment in (api, worker):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# --- Consistency across all of them -------------------------------------------------------


def test_port_3000_everywhere() -> None:
    port = Settings.model_fields["port"].default
    assert port == 3000
    _, instructions = parse_dockerfile((ROOT / "Dockerfile").read_text())
    assert only(instructions, "runtime", "EXPOSE").args == str(port)
    assert env_of(instructions, "runtime").get("PORT", str(port)) == str(port)
    assert load_compose(COMPOSE_FILE)["services"]["api"]["ports"] == [f"{port}:{port}"]
    assert k8s_object("ConfigMap", "mailer-config")["data"]["PORT"] == str(port)
    container = only_container(k8s_object("Deployment", "mailer-api")["spec"]["template"]["spec"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["livenessProbe"]["httpGet"]["port"] == port
    assert container["readinessProbe"]["httpGet"]["port"] == port


def env_example_names() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M)


def test_env_example_names_only_settings() -> None:
    names = env_example_names()
    assert names
    assert set(names) <= set(settings_env_keys())


def test_env_example_lists_every_setting() -> None:
    assert {name.upper() for name in Settings.model_fields} <= set(env_example_names())


def test_env_example_active_values_are_valid() -> None:
    env: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            env[match.group(1)] = match.group(2)
    settings_from_env(env)


# --- The install script itself ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MAILER_SLOW_TESTS") != "1", reason="set MAILER_SLOW_TESTS=1 (installs)"
)
def test_install_script_builds_a_working_runtime_venv(tmp_path: Path) -> None:
    """What the Dockerfile's builder does: install.sh from the copied tree into a new venv."""
    _, instructions = parse_dockerfile((ROOT / "Dockerfile").read_text())
    context = tmp_path / "src"
    for instruction in stage_of(instructions, "builder", "COPY"):
        for source in instruction.args.split()[:-1]:
            target = context / source
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                subprocess.run(["cp", "-r", str(ROOT / source), str(target)], check=True)
            else:
                subprocess.run(["cp", str(ROOT / source), str(target)], check=True)
    venv = tmp_path / "venv"
    subprocess.run(
        ["bash", str(context / "deploy" / "install.sh"), str(venv), "runtime"],
        cwd=context,
        check=True,
        timeout=900,
    )
    result = subprocess.run(
        [str(venv / "bin" / "mailer"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("api", "worker", "migrate"):
        assert command in result.stdout
    # Non-editable: the venv runs without the source tree.
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mailer; print(mailer.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in check.stdout
