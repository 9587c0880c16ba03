"""The peers' own virtualenv, apart from the project's (their pins conflict with ours).

Created under ``.cache/bench-venv`` from ``bench/requirements-peers.txt`` (every package
pinned, with hashes) and reused while that file is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "bench-venv"
REQUIREMENTS = ROOT / "bench" / "requirements-peers.txt"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".bench-requirements.sha256"


def ensure(progress: Progress) -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return PYTHON
    progress.line(f"creating the peers' virtualenv in {VENV.relative_to(ROOT)} (cached) ...")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--require-hashes",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )
    STAMP.write_text(digest + "\n")
    return PYTHON


def versions(python: Path) -> dict[str, str]:
    """Installed versions of the peers' main packages."""
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('quixstreams', 'kafka-python', 'confluent-kafka', 'redis')}))"
    )
    out = subprocess.run(  # noqa: S603
        [str(python), "-c", code], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, str] = json.loads(out)
    return result
