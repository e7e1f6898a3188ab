"""The drop-in: a job written against ``neuron_explainer.activations.activations``, run once as
written (the reference loader reading the files over HTTP) and once with only its import switched
to ``neuron_activations`` (the server reading the same files), prints the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("dropin_job.py")
ORIGINAL = "from neuron_explainer.activations.activations import"
SWITCHED = "from neuron_activations import"


def run(script: Path, dataset_path: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(script), dataset_path],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_switching_the_import_changes_nothing_in_the_output(
    web_server: str, http_url: str, tmp_path: Path
) -> None:
    text = JOB.read_text()
    assert text.count(ORIGINAL) == 1
    switched = tmp_path / "dropin_job.py"
    switched.write_text(text.replace(ORIGINAL, SWITCHED))
    package = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package, "ACTIVATIONS_SERVER": web_server}
    env.pop("ACTIVATIONS_DATASET", None)
    as_written = run(JOB, http_url, env)
    served = run(switched, http_url, env)
    assert "neuron 1/1: max" in as_written
    assert served == as_written
