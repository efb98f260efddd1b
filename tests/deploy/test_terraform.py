"""deploy/terraform: `terraform validate` passes, and the cloud-init it renders carries the very
files of deploy/systemd and deploy/nginx.

Runs for real where this machine class has them: the `terraform` binary and the pinned AWS
provider in a local plugin mirror (`RLCHAT_TF_PLUGIN_DIR`, default /opt/tf-plugins); skipped,
saying which is missing, elsewhere. Nothing reaches AWS: `init` installs from the mirror,
`validate` is offline, and the user data is evaluated with `terraform console`, which needs
no credentials for values that depend only on variables and files.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TERRAFORM_DIR = DEPLOY / "terraform"
PLUGIN_DIR = Path(os.environ.get("RLCHAT_TF_PLUGIN_DIR", "/opt/tf-plugins"))
PACKAGE = "rlchat[postgres] @ https://example.org/dist/rlchat-0.1.0-py3-none-any.whl"
MODELS_S3 = "s3://example-models/rlchat/v1"
# EC2 refuses user data over 16 KiB (after base64).
USER_DATA_LIMIT = 16 * 1024

# Where cloud-init puts each file of the repository.
INSTALLED = {
    "/etc/systemd/system/rlchat@.service": DEPLOY / "systemd" / "rlchat@.service",
    "/etc/systemd/system/rlchat.target": DEPLOY / "systemd" / "rlchat.target",
    "/etc/rlchat/rlchat.env": DEPLOY / "systemd" / "rlchat.env",
    "/etc/nginx/conf.d/rlchat.conf": DEPLOY / "nginx" / "rlchat.conf",
    "/etc/nginx/rlchat-replicas.conf": DEPLOY / "nginx" / "replicas.conf",
}
SETUP = "/usr/local/sbin/rlchat-setup"


def pinned_aws_version() -> str:
    text = (TERRAFORM_DIR / "versions.tf").read_text(encoding="utf-8")
    pattern = r'source\s*=\s*"hashicorp/aws"\s*\n(?:\s*#.*\n)*\s*version\s*=\s*"=\s*([\d.]+)"'
    match = re.search(pattern, text)
    assert match, "versions.tf should pin hashicorp/aws to one version"
    return match.group(1)


def terraform_binary_or_skip() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform not on PATH: deploy/terraform was not validated")
    return binary


def terraform_or_skip() -> str:
    """terraform with the pinned AWS provider in the local mirror, or skip saying which lacks."""
    binary = terraform_binary_or_skip()
    provider = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws" / pinned_aws_version()
    if not provider.is_dir():
        pytest.skip(
            f"no hashicorp/aws {pinned_aws_version()} in the plugin mirror {PLUGIN_DIR} "
            "(set RLCHAT_TF_PLUGIN_DIR): deploy/terraform was not validated"
        )
    return binary


def tf_env(tmp: Path) -> dict[str, str]:
    """Terraform on its own: no user CLI configuration, no TF_VAR_*, no calls home."""
    rc = tmp / "terraformrc"
    rc.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(TF_CLI_CONFIG_FILE=str(rc), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    env["TF_INPUT"] = "0"
    return env


class Terraform:
    def __init__(self, binary: str, workdir: Path, env: dict[str, str]):
        self.binary, self.workdir, self.env = binary, workdir, env

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            cwd=self.workdir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"terraform {' '.join(args)}:\n{result.stdout}{result.stderr}"
        )
        return result

    def evaluate(self, expressions: str, **variables: str) -> dict:
        """Values of an HCL object expression, as the configuration computes them with these
        variables (through base64, so that no `${` is shown escaped)."""
        flags = [f"-var={name}={value}" for name, value in variables.items()]
        result = self(
            "console", "-no-color", *flags, stdin=f"base64encode(jsonencode({expressions}))\n"
        )
        lines = result.stdout.splitlines()
        (line,) = [ln for ln in lines if re.fullmatch(r'"[A-Za-z0-9+/=]+"', ln)]
        return json.loads(base64.b64decode(line.strip('"')))


@pytest.fixture(scope="module")
def terraform(tmp_path_factory) -> Terraform:
    binary = terraform_or_skip()
    tmp = tmp_path_factory.mktemp("terraform")
    # The recipe reads ../systemd and ../nginx: copy all of deploy/, nothing else.
    shutil.copytree(
        DEPLOY, tmp / "deploy", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    tf = Terraform(binary, tmp / "deploy" / "terraform", tf_env(tmp))
    tf("init", "-backend=false", f"-plugin-dir={PLUGIN_DIR}", "-input=false", "-no-color")
    return tf


# What the tests read from the configuration, as one HCL object.
RENDERED_VALUES = {
    "user_data": "local.user_data",
    "setup": "local.setup_script",
    "ports": "local.replica_ports",
    "web": "local.web_ingress",
    "ssh": "var.ssh_cidr_blocks",
    "gzipped": "base64gzip(local.user_data)",
    "bucket": "local.models_bucket",
    "prefix": "local.models_prefix",
}
RENDERED = "{" + ", ".join(f"{key} = {expr}" for key, expr in RENDERED_VALUES.items()) + "}"


@pytest.fixture(scope="module")
def rendered(terraform) -> dict:
    """The configuration's values with defaults for everything but the package."""
    return terraform.evaluate(RENDERED, rlchat_package=PACKAGE)


@pytest.fixture(scope="module")
def rendered_s3(terraform) -> dict:
    return terraform.evaluate(RENDERED, rlchat_package=PACKAGE, models_s3_uri=MODELS_S3)


def cloud_config(values: dict) -> dict:
    user_data = values["user_data"]
    assert user_data.startswith("#cloud-config\n")
    return yaml.safe_load(user_data)


def written(values: dict) -> dict[str, str]:
    return {item["path"]: item["content"] for item in cloud_config(values)["write_files"]}


def test_validate(terraform):
    result = terraform("validate", "-json", "-no-color")
    report = json.loads(result.stdout)
    assert report["valid"] is True, report
    assert report["error_count"] == 0 and report["warning_count"] == 0, report
    assert report["diagnostics"] == [], report


def test_formatted():
    binary = terraform_binary_or_skip()
    result = subprocess.run(
        [binary, "fmt", "-check", "-diff", "-no-color", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cloud_init_writes_the_repository_files_verbatim(rendered):
    files = written(rendered)
    for path, source in INSTALLED.items():
        assert files.get(path) == source.read_text(encoding="utf-8"), (
            f"{path} differs from {source}"
        )
    assert files[SETUP] == rendered["setup"]
    config = cloud_config(rendered)
    assert config["runcmd"] == [[SETUP]]
    assert {"python3-venv", "nginx", "postgresql"} <= set(config["packages"])
    assert "awscli" not in config["packages"], "awscli only when the models come from S3"


def test_paths_agree_between_files(rendered):
    """The unit reads the env file cloud-init writes and runs the venv the script makes;
    nginx includes the replicas file where cloud-init puts it."""
    files = written(rendered)
    unit = files["/etc/systemd/system/rlchat@.service"]
    assert "EnvironmentFile=/etc/rlchat/rlchat.env\n" in unit
    assert "ExecStart=/opt/rlchat/venv/bin/rlchat serve " in unit
    assert "venv=/opt/rlchat/venv\n" in rendered["setup"]
    assert "include rlchat-replicas.conf;" in files["/etc/nginx/conf.d/rlchat.conf"]
    # The script fills in exactly these lines of the example environment file.
    env = files["/etc/rlchat/rlchat.env"]
    for key in ("RLCHAT_RUNS", "RLCHAT_DATABASE"):
        assert len(re.findall(rf"^{key}=", env, re.MULTILINE)) == 1
        assert f"s|^{key}=.*|{key}=" in rendered["setup"]


def test_setup_script(rendered, tmp_path):
    script = rendered["setup"]
    path = tmp_path / "rlchat-setup"
    path.write_text(script, encoding="utf-8")
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    torch = script.index("--index-url 'https://download.pytorch.org/whl/cpu' 'torch==2.13.0'")
    assert torch < script.index(f"pip\" install --no-cache-dir '{PACKAGE}'")
    assert "rm -f /etc/nginx/sites-enabled/default" in script
    assert rendered["ports"] == ["8001", "8002"]
    assert "replicas='rlchat@8001.service rlchat@8002.service'" in script
    assert "systemctl enable rlchat.target $replicas" in script
    assert "RLCHAT_RUNS=/opt/rlchat/models/comedy-rl|" in script
    assert "postgresql://rlchat:$password@127.0.0.1:5432/rlchat" in script
    assert "aws s3" not in script


def test_models_from_s3(rendered_s3):
    config = cloud_config(rendered_s3)
    assert "awscli" in config["packages"]
    assert f"aws s3 sync --only-show-errors '{MODELS_S3}' \"$models\"" in rendered_s3["setup"]
    assert (rendered_s3["bucket"], rendered_s3["prefix"]) == ("example-models", "rlchat/v1")


def test_only_web_ports_open_by_default(rendered):
    assert {rule["port"] for rule in rendered["web"].values()} == {80, 443}
    assert rendered["ssh"] == []


def test_user_data_fits_ec2(rendered, rendered_s3):
    """main.tf sends the user data gzipped (base64, as EC2 counts it): under the limit, and
    it decompresses to the cloud-config rendered."""
    for values in (rendered, rendered_s3):
        assert len(values["gzipped"]) <= USER_DATA_LIMIT
        unpacked = gzip.decompress(base64.b64decode(values["gzipped"])).decode("utf-8")
        assert unpacked == values["user_data"]
