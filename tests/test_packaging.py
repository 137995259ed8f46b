"""The pack as the Comfy Registry and ComfyUI-Manager see it: `comfy node validate` (comfy-cli, installed by
scripts/setup.sh in .venv-cli) accepts pyproject.toml, the README's changelog leads with pyproject's version, the
publishing workflow is the registry's action on version bumps, and nothing is declared for the Manager to pip-install
into a user's ComfyUI."""
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMFY_CLI = ROOT / ".venv-cli" / "bin" / "comfy"


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_comfy_node_validate_accepts_the_pack():
    if not COMFY_CLI.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("scripts/setup.sh should have installed comfy-cli in .venv-cli")
        pytest.skip("comfy-cli is not installed in .venv-cli (bash scripts/setup.sh installs it)")
    r = subprocess.run([str(COMFY_CLI), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "validation checks passed" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_packed_node_has_the_pack_and_not_the_training_state():
    """`comfy node pack` (what `comfy node publish` uploads): the nodes, the core, the bundled models and the workflows;
    not training/ (world-model runs carried between sessions, tens of MB; left out by .comfyignore)."""
    import zipfile
    if not COMFY_CLI.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("scripts/setup.sh should have installed comfy-cli in .venv-cli")
        pytest.skip("comfy-cli is not installed in .venv-cli (bash scripts/setup.sh installs it)")
    archive = ROOT / "node.zip"
    try:
        r = subprocess.run([str(COMFY_CLI), "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        names = zipfile.ZipFile(archive).namelist()
    finally:
        archive.unlink(missing_ok=True)
    tops = {n.split("/", 1)[0] for n in names}
    assert {"__init__.py", "nodes", "nasa_core", "models", "workflows", "pyproject.toml"} <= tops, sorted(tops)
    assert "training" not in tops, [n for n in names if n.startswith("training/")][:5]


def test_changelog_leads_with_the_published_version():
    version = pyproject()["project"]["version"]
    changelog = (ROOT / "README.md").read_text().split("## Changelog", 1)[1]
    first = re.search(r"^### (\S+)", changelog, re.M)
    assert first and first.group(1) == version, (first and first.group(1), version)


def test_publishing_workflow_runs_the_registry_action_on_version_bumps():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as True
    assert "pyproject.toml" in triggers["push"]["paths"]
    steps = workflow["jobs"]["publish-node"]["steps"]
    publish = [s for s in steps if str(s.get("uses", "")).startswith("Comfy-Org/publish-node-action@")]
    assert publish and "REGISTRY_ACCESS_TOKEN" in publish[0]["with"]["personal_access_token"]


def test_nothing_for_the_manager_to_install():
    project = pyproject()
    assert project["project"]["dependencies"] == []
    assert not (ROOT / "requirements.txt").exists()
    assert project["tool"]["comfy"]["PublisherId"] and project["tool"]["comfy"]["DisplayName"]
