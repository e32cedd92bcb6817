"""The deployment files in docker/, checked without Docker (which these machines do not run).

* docker-compose.yml against the official compose-spec JSON schema (vendored in the
  ``check-jsonschema`` wheel, Apache-2.0), both as written and after interpolation with the values
  of .env.example, the way ``docker compose`` sees it;
* every ``${VAR}`` is required (``${VAR:?message}``) and listed in .env.example, which lists nothing
  else and leaves every secret empty; no secret literal anywhere;
* one host port per service, a health check on every service, the Dagster services waiting for
  PostgreSQL and MinIO;
* dagster.yaml against Dagster's own instance schema, each configurable class against its own
  config schema; workspace.yaml against Dagster's workspace schema; the Dockerfile and the Helm
  values consistent with both.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DAGSTER_YAML = DOCKER / "dagster.yaml"
WORKSPACE_YAML = DOCKER / "workspace.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
K8S_VALUES = DOCKER / "k8s-values.yaml"
README = DOCKER / "README.md"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file

DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon", "celery-worker")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|TOKEN|CREDENTIAL", re.IGNORECASE)
# ${NAME}, ${NAME:?msg}, ${NAME?msg}, ${NAME:-default}, ${NAME-default}; $$ is a literal dollar
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[?+-])(?P<arg>[^}]*))?\}")


class MissingVariable(ValueError):
    pass


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    assert (vendor / "licenses" / "LICENSE.compose-spec").is_file()  # the schema's Apache-2.0 license
    return schema


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            assert name not in values, f"{name} twice in .env.example"
            values[name.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """.env.example with every empty (secret) value filled in, as a user's docker/.env would be."""
    return {name: value or f"test-{name.lower().replace('_', '-')}-0123456789" for name, value in env_example().items()}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of one value: ${VAR:?msg} fails on unset or empty, $$ becomes $."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return VARIABLE.sub(replace, text).replace("$$", "$")


def interpolate_document(value: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value of a parsed compose file (comments are not values)."""
    if isinstance(value, dict):
        return {key: interpolate_document(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate_document(item, env) for item in value]
    return interpolate(value, env) if isinstance(value, str) else value


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*strings(key), *strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def resolved_compose() -> dict[str, Any]:
    return interpolate_document(raw_compose(), filled_env())


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    for document in (raw_compose(), resolved_compose()):
        errors = sorted(validator_class(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_every_variable_is_required_and_listed_in_env_example() -> None:
    used: dict[str, set[str | None]] = {}
    for value in strings(raw_compose()):
        for match in VARIABLE.finditer(value):
            used.setdefault(match["name"], set()).add(match["op"])
    listed = env_example()
    assert set(used) == set(listed), (
        f"used but not in .env.example: {sorted(set(used) - set(listed))}; "
        f"in .env.example but unused: {sorted(set(listed) - set(used))}"
    )
    optional = {name for name, ops in used.items() if ops != {":?"}}
    assert not optional, f"compose must refuse to start without these (use ${{VAR:?message}}): {sorted(optional)}"
    # as compose does: the example itself, secrets still empty, is refused
    with pytest.raises(MissingVariable) as refused:
        interpolate_document(raw_compose(), listed)
    assert SECRET_NAME.search(str(refused.value).split(":")[0])
    resolved_compose()  # and a filled-in .env is accepted


def test_no_secret_values_in_the_repository() -> None:
    listed = env_example()
    secrets_ = {name for name in listed if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MEDQA_S3_SECRET_ACCESS_KEY"} <= secrets_
    assert all(listed[name] == "" for name in secrets_), "a secret has a value in .env.example"
    for service, definition in raw_compose()["services"].items():
        environment = definition.get("environment") or {}
        assert isinstance(environment, dict), f"{service}: use the mapping form of environment"
        for key, value in environment.items():
            if SECRET_NAME.search(key) or "://" in str(value) and "@" in str(value):
                assert VARIABLE.search(str(value)) and not re.search(r"://[^$/@]+@", str(value)), (
                    f"{service}.{key} holds a literal credential"
                )
                leftover = VARIABLE.sub("", str(value))
                assert not SECRET_NAME.search(leftover) and not re.search(r":[^/$@]+@", leftover), (
                    f"{service}.{key} mixes a literal into a credential"
                )
    # dagster.yaml: credentials only from the environment
    instance = yaml.safe_load(DAGSTER_YAML.read_text())
    postgres_db = instance["storage"]["postgres"]["postgres_db"]
    for field in ("username", "password", "hostname", "db_name"):
        assert set(postgres_db[field]) == {"env"}, f"postgres_db.{field} must come from the environment"
    assert postgres_db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 would pick psycopg 3
    dockerfile = DOCKERFILE.read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*(PASSWORD|SECRET|ACCESS_KEY)", dockerfile, re.MULTILINE | re.IGNORECASE)
    for path in (COMPOSE, DAGSTER_YAML, DOCKERFILE, K8S_VALUES, README, ENV_EXAMPLE):
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"an AWS access key id in {path.name}"
        assert not re.search(r"(password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{16,}", text, re.IGNORECASE), (
            f"something like a literal secret in {path.name}"
        )


def host_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                found.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        assert len(parts) >= 2, f"port {port!r} publishes on a random host port"
        host_ip, host_port = (parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0])
        found.append((host_ip, int(host_port)))
    return found


def test_no_two_services_share_a_host_port() -> None:
    compose = resolved_compose()
    owners: dict[int, str] = {}
    for name, service in compose["services"].items():
        for _, port in host_ports(service):
            assert port not in owners, f"host port {port} used by both {owners[port]} and {name}"
            owners[port] = name
    assert owners[5000] == "mlflow" and owners[8000] == "endpoint"  # the known 8000 clash is gone
    assert {"postgres", "redis"}.isdisjoint(owners.values()), "databases stay off the host network"
    assert all(ip == "127.0.0.1" for s in compose["services"].values() for ip, _ in host_ports(s))


def test_every_service_has_a_health_check_and_waits_for_what_it_needs() -> None:
    services = raw_compose()["services"]
    expected = {
        "postgres",
        "minio",
        "createbuckets",
        "mlflow",
        "dagster-webserver",
        "dagster-daemon",
        "dashboard",
        "endpoint",
        "redis",
        "celery-worker",
    }
    assert set(services) == expected
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        test = check["test"]
        assert (test[0] if isinstance(test, list) else "CMD-SHELL") in ("CMD", "CMD-SHELL"), name
    for name in DAGSTER_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["minio"]["condition"] == "service_healthy", name
        assert depends["createbuckets"]["condition"] == "service_completed_successfully", name
    assert services["celery-worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["createbuckets"]["restart"] == "no"


def env_references(value: Any) -> list[str]:
    """The variables of every ``{env: NAME}`` in a Dagster config document."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return [value["env"]]
        return [name for item in value.values() for name in env_references(item)]
    if isinstance(value, list):
        return [name for item in value for name in env_references(item)]
    return []


def test_dagster_services_get_every_variable_the_instance_reads() -> None:
    needed = set(env_references(yaml.safe_load(DAGSTER_YAML.read_text())))
    assert {"DAGSTER_PG_PASSWORD", "DAGSTER_COMPUTE_LOGS_BUCKET", "MEDQA_S3_ENDPOINT_URL"} <= needed
    services = resolved_compose()["services"]
    for name in DAGSTER_SERVICES:
        environment = services[name]["environment"]
        assert needed <= set(environment), f"{name} lacks {sorted(needed - set(environment))}"
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert environment["MEDQA_STORE_URL"].startswith("s3://")


def test_dagster_yaml_is_a_valid_instance_config(tmp_path: Path) -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))  # raises DagsterInvalidConfigError
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    classes = {
        "run_coordinator": "QueuedRunCoordinator",
        "run_launcher": "DefaultRunLauncher",
        "compute_logs": "S3ComputeLogManager",
    }
    for section, class_name in classes.items():
        entry = config[section]
        assert entry["class"] == class_name
        module = ConfigurableClassData(entry["module"], entry["class"], "{}").module_name  # dagster.core -> _core
        configurable = class_from_code_pointer(module, entry["class"])
        result = validate_config(configurable.config_type(), entry.get("config") or {})
        assert result.success, f"{section}: {[e.message for e in result.errors]}"
    assert config["run_monitoring"]["enabled"] is True
    assert config["telemetry"]["enabled"] is False


def test_workspace_yaml_loads_the_platforms_definitions() -> None:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    workspace = ensure_workspace_config(yaml.safe_load(WORKSPACE_YAML.read_text()), str(WORKSPACE_YAML))
    [target] = workspace["load_from"]
    assert target["python_module"]["module_name"] == "medqa_assets.definitions"
    from medqa_assets.definitions import defs

    assert {"offline_etl", "retraining_etl"} <= {job.name for job in defs.jobs}


def test_one_code_location_name_everywhere() -> None:
    """dg dev (pyproject), dagster dev -w workspace.yaml and the compose stack all call it medqa_assets."""
    import tomllib

    root = DOCKER.parent
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["tool"]["dg"]["project"]["code_location_name"] == "medqa_assets"
    for path in (root / "workspace.yaml", WORKSPACE_YAML):
        [target] = yaml.safe_load(path.read_text())["load_from"]
        assert target["python_module"]["location_name"] == "medqa_assets", path


def test_dockerfile_installs_the_project_and_ships_the_instance() -> None:
    text = DOCKERFILE.read_text()
    root = DOCKER.parent
    for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (root / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    assert ignore[0] == "**", "the build context is an allowlist"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        source.rstrip("/") for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE) for source in line.split()[:-1]
    }
    assert copied <= allowed, f"copied but excluded from the build context: {sorted(copied - allowed)}"
    assert not any(".env" in entry for entry in allowed), "docker/.env must never enter the build context"
    assert "COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in text
    assert re.search(r"^ENV\b[^\n]*(\\\n[^\n]*)*DAGSTER_HOME=/opt/dagster/home", text, re.MULTILINE)
    assert re.search(r"^USER\s+(?!root\b)\S+", text, re.MULTILINE), "the image must not run as root"
    assert 'pip install ".[deploy]"' in text
    import tomllib

    deploy = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["deploy"]
    for package in ("dagster-postgres", "dagster-celery", "psycopg2-binary", "redis", "mlflow="):
        assert any(spec.startswith(package) for spec in deploy), f"{package} is not in the deploy extra"
    workspace_target = re.search(r"^COPY docker/workspace.yaml (\S+)$", text, re.MULTILINE)[1]
    for name in DAGSTER_SERVICES:
        command = " ".join(raw_compose()["services"][name]["command"])
        if "dagster" in command.split()[0]:
            assert f"-w {workspace_target}" in command


def test_helm_values_use_the_k8s_run_launcher_and_no_literal_secrets() -> None:
    values = yaml.safe_load(K8S_VALUES.read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "medqa_assets.definitions"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert not values["postgresql"].get("postgresqlPassword"), "the password belongs in a Kubernetes secret"
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    env_names = {entry["name"] for entry in deployment["env"]}
    assert {"MEDQA_STORE_URL", "MEDQA_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"} <= env_names
    assert not env_names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, "credentials come from envSecrets"
    assert deployment["envSecrets"]
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
