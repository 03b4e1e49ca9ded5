"""Build the wheel and sdist with ``python -m build`` and check they install and import.

Each artifact goes into its own fresh virtual environment made without pip. Nothing downloads:
the build runs without isolation on this environment's setuptools, the package installs with
``--no-deps --no-index``, and the new environment reaches the already installed dependencies
(torch, numpy, PyYAML) through a ``.pth`` line pointing at this environment's site-packages.
That line adds the folder to ``sys.path`` without running the ``.pth`` files inside it, so the
development (editable) install of deqkit stays invisible and the import must come from the
artifact. Run as ``python scripts/check_dist.py [OUT_DIR]``; exits non-zero on any failure.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SMOKE = """
import pathlib, sys, torch, deqkit as dk
here = pathlib.Path(dk.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in here.parents, f"imported from {here}"
assert (here.parent / "py.typed").is_file(), "py.typed missing"
from deqkit.zoo import recipe_paths
assert recipe_paths(), "no recipes shipped"
z, sol = dk.fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8)
assert sol.status == dk.Status.CONVERGED and torch.allclose(z, torch.full((2, 3), 2.0))
print("smoke ok", dk.__version__, here.parent)
"""


def run(*cmd, cwd=None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(
            f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def build(out: Path) -> tuple[Path, Path]:
    # setuptools >= 70.1 builds wheels itself, so the check skips the build-requires test
    # (which would ask for the separate `wheel` package) rather than downloading anything.
    run(
        sys.executable,
        "-m",
        "build",
        "--no-isolation",
        "--skip-dependency-check",
        "--outdir",
        str(out),
        str(ROOT),
    )
    (wheel,) = out.glob("deqkit-*.whl")
    (sdist,) = out.glob("deqkit-*.tar.gz")
    return wheel, sdist


def fresh_env(path: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(site, "_deqkit_check_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def install_and_smoke(artifact: Path, env: Path) -> str:
    python = fresh_env(env)
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--disable-pip-version-check",
        str(artifact),
    )
    out = run(python, "-c", SMOKE, cwd=env)
    run(env / "bin" / "deqkit", "recipes", cwd=env)  # the console script is installed
    return out.strip()


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(argv[0]) if argv else Path(tmp) / "dist"
        wheel, sdist = build(out)
        print(f"built {wheel.name} and {sdist.name}")
        for artifact, name in ((wheel, "wheel"), (sdist, "sdist")):
            print(f"{name}: {install_and_smoke(artifact, Path(tmp) / f'env-{name}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
