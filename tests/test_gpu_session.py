"""benchmarks/gpu_session.sh on the CPU: its dry mode, the time budget and the JAX cache."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["torch-ddu-untuned", "torch-tuned", "torch-ddu-b32", "jax-ddu-bf16", "jax-ddu"]


def session(out: Path, **env: str) -> str:
    env = {**os.environ, "DRY": "1", "OUT": str(out), "PYTHON": sys.executable, **env}
    subprocess.run(
        ["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env, timeout=500, check=True
    )
    return (out / "results.md").read_text()


def test_variants_past_the_budget_are_skipped_and_said_so(tmp_path):
    results = session(tmp_path, BUDGET="0")
    for name in VARIANTS:
        assert f"<!-- {name}: skipped, 0 s of the budget left -->" in results
    assert results.startswith("| model |") and "<!-- done after" in results


@pytest.mark.slow
def test_a_dry_jax_variant_writes_its_row_and_the_compile_cache(tmp_path):
    results = session(tmp_path, ONLY="^jax-ddu-bf16$")
    rows = [line for line in results.splitlines() if line.startswith("| dilated_dense |")]
    assert len(rows) == 1 and "| tiny | auto | mixed_bfloat16 | 2 |" in rows[0], results
    assert "error" not in rows[0] and "TIMEOUT" not in results
    assert "torch-ddu-untuned" not in results  # ONLY picked one variant
    with tarfile.open(tmp_path / "jax_cache.tgz") as packed:
        # The compiled step travels back in one file (the device returns at most 8).
        assert any("train_step" in name for name in packed.getnames()), packed.getnames()
