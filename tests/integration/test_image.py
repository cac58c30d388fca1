"""The container image's install steps (docker/install.sh, which the Dockerfile runs), run here in a
plain venv because no container engine runs on the build machine: the wheel built from this
checkout, exactly the lock's dependencies, then `--version` and `doctor` on a real repository,
as the CI job smoke-tests the image. The Dockerfile itself is checked for what it must say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env, make_remote
from jit_dispatch import __version__
from jit_dispatch.trackers.jit.store import NewIssue

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_dockerfile_installs_through_the_tested_script_as_a_non_root_user() -> None:
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", DOCKERFILE, re.M)
    assert "apt-get install -y --no-install-recommends git ca-certificates" in DOCKERFILE
    assert "RUN sh /tmp/install/install.sh /opt/jit-dispatch /tmp/install/dist /tmp/install/requirements.lock" in (
        DOCKERFILE
    )
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M), "not root"
    assert 'ENTRYPOINT ["jit-dispatch"]' in DOCKERFILE
    for label in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE
    ignore = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert ignore[0] == "*" and "!dist/*.whl" in ignore, "the build context is the wheel and the lock only"


def norm(pin: str) -> str:
    """`Typing_Extensions==4.1` → `typing-extensions==4.1` (PEP 503 names)."""
    name, _, version = pin.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


@pytest.mark.slow
def test_the_install_steps_in_a_plain_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(PROJECT_ROOT)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    prefix = tmp_path / "opt" / "jit-dispatch"
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    lock = PROJECT_ROOT / "requirements" / "action-github.lock"
    install = subprocess.run(["sh", str(PROJECT_ROOT / "docker" / "install.sh"), str(prefix), str(dist), str(lock)],
                             capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    assert install.stdout.strip().splitlines()[-1] == f"jit-dispatch, version {__version__}"
    cli = prefix / "bin" / "jit-dispatch"
    remote = make_remote(tmp_path, [NewIssue("first")])
    clone = remote.clone(tmp_path / "clone")
    doctor = subprocess.run([str(cli), "doctor", "--sync", "git"], cwd=clone, env=clean_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.strip().endswith("jit-dispatch doctor: all good")
    frozen = subprocess.run([str(prefix / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
    pins = {norm(line.split(" ")[0]) for line in lock.read_text().splitlines() if re.match(r"^[a-z]", line, re.I)}
    installed = {norm(line) for line in frozen.splitlines() if not line.startswith(("jit-dispatch", "jit_dispatch"))}
    assert installed == pins, "exactly the lock's pins, nothing resolved"


def test_the_install_script_refuses_anything_but_one_wheel(tmp_path: Path) -> None:
    empty = tmp_path / "dist"
    empty.mkdir()
    lock = tmp_path / "empty.lock"
    lock.write_text("")
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    script = str(PROJECT_ROOT / "docker" / "install.sh")
    run = subprocess.run(["sh", script, str(tmp_path / "p"), str(empty), str(lock)],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 1 and "expected one jit_dispatch wheel" in run.stderr, run.stderr
    assert not (tmp_path / "p").exists(), "refused before building a venv for nothing"
