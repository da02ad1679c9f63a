"""The README and the documentation site teach what runs: every code block in README.md and
docs/**/*.md runs here, on small data, and ``mkdocs build --strict`` passes.

A page's blocks run in order in one fresh directory, as a reader would type them: Python
blocks in one namespace, shell blocks line by line (``&&`` chains split, ``\\`` lines
joined). What a reader does once per machine is not re-run: installs (apt-get, venv, pip)
and the test command, which is what runs this file. Small data: ``SPIKEACC_DATA`` and any
``--data-dir`` point at a directory of tiny datasets written in the real formats, every
``spikeacc train`` and ``spikeacc sweep`` gets ``--epochs 1`` (two with ``--resume``) and small
``--limit-train`` / ``--limit-test`` after its own options, and a benchmark command runs ``--quick`` into the
page's directory (never ``--update-results``). Fences other than python, bash and text
(output) are refused, so no block escapes.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cifar10_dvs import write_dataset as write_cifar10_dvs
from tests.test_data import write_cifar_dir, write_mnist_dir
from tests.test_nmnist import write_tiny_nmnist

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SETUP = ("apt-get", "sudo", "python3 -m venv", "pip install", "pip3 install", "-m pytest")
SMALL_TRAIN = ["--limit-train", "96", "--limit-test", "48", "--threads", "1"]  # a sweep's trials: one thread each
BIN = Path(sys.executable).parent


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in FENCE.findall(page.read_text())]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Tiny datasets in the real formats, one folder each (spikeacc's lookup finds them)."""
    root = tmp_path_factory.mktemp("data")
    for name in ("fashion-mnist", "mnist"):
        write_mnist_dir(root / name, gz=False, n_train=120, n_test=60)
    write_cifar_dir(root / "cifar10")
    write_tiny_nmnist(root / "nmnist")
    write_cifar10_dvs(root / "cifar10-dvs")
    return root


def test_every_fence_is_python_bash_or_text():
    found = {(page_id(page), lang) for page in PAGES for lang, _ in blocks(page)}
    assert {lang for _, lang in found} <= {"python", "bash", "text"}, found


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block, as words: continuation lines joined, comments dropped,
    ``&&`` chains split."""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


def small(words: list[str], data_dir: Path, bench_dir: Path) -> list[str] | None:
    """The command as it runs here (module docstring), or None for a setup step."""
    if any(marker in " ".join(words) for marker in SETUP):
        return None
    words = [os.path.expanduser(w).replace(os.path.expanduser("~/data"), str(data_dir)) for w in words]
    program = words[0].removeprefix(".venv/bin/")
    words[0] = sys.executable if program == "python" else str(BIN / program) if (BIN / program).exists() else program
    if ("train" in words or "sweep" in words) and any(w.endswith("spikeacc") for w in words):
        words += ["--epochs", "2" if "--resume" in words else "1", *SMALL_TRAIN]
    if "bench" in words or "benchmarks" in words:
        words = [w for w in words if w != "--update-results"]
        if "--help" not in words:
            words += ["--quick", "--out", str(bench_dir)]
    return words


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_code_block_runs(page, data_dir, tmp_path):
    env = {**os.environ, "SPIKEACC_DATA": str(data_dir), "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg"}
    namespace: dict = {"__name__": "__docs__"}
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for number, (lang, code) in enumerate(blocks(page), 1):
            where = f"{page_id(page)} block {number}"
            if lang == "python":
                exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the page's own code)
            elif lang == "bash":
                for command in shell_commands(code):
                    words = small(command, data_dir, tmp_path / "bench")
                    if words is None:
                        continue
                    done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
                    assert done.returncode == 0, f"{where}: {' '.join(command)}\n{done.stdout[-2000:]}\n" \
                                                 f"{done.stderr[-2000:]}"
    finally:
        os.chdir(cwd)


def test_the_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(BIN))
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[test]'")
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
