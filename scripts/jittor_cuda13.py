"""Jittor 1.3.11 on CUDA 13: decide whether Jittor needs the project's patch, and apply it.

Stock Jittor 1.3.11 builds its CUDA backend with nvcc 10.2-12.x. nvcc 13
(CCCL 3, cuDNN 9) needs the source changes in
``scripts/jittor_cuda13/jittor_cuda13.patch`` (each explained there). This
tool, standard library only:

* :func:`nvcc_version` -- the ``(major, minor[, patch])`` that ``nvcc --version`` reports;
* :func:`route` -- ``"stock"`` for CUDA 11/12 (Jittor untouched), ``"patch"`` for 13 and
  later, ``"cpu"`` without nvcc or without a visible GPU;
* :func:`apply` -- applies the patch to a Jittor *this project* installed (a virtual
  environment inside the project folder) or to an explicit copy folder, never to a
  Jittor the user installed elsewhere. It checks the version (1.3.11) first, is
  idempotent (``"applied"`` the first time, ``"already"`` after), and writes nothing
  unless every hunk applies;
* :func:`make_copy` -- copies ``jittor`` and ``jittor_utils`` into a folder (to patch the
  copy and put it first on ``PYTHONPATH`` instead of touching an installation).

The patch is applied by a small unified-diff applier in this file (exact context,
line offsets allowed, no fuzz), so the GNU ``patch`` program is not needed; the
tests check that ``patch -p1`` gives byte-identical files.

Command line::

    python scripts/jittor_cuda13.py                      # the project's .venv: route, then patch if needed
    python scripts/jittor_cuda13.py --check              # only say what would be done
    python scripts/jittor_cuda13.py --venv work_dirs/gpu_venv
    python scripts/jittor_cuda13.py --copy-to /tmp/jt    # patch a copy of .venv's Jittor, print PYTHONPATH
    python scripts/jittor_cuda13.py --jittor-dir DIR --copy   # DIR is a copy folder made by hand

Exit status: 0 done (or nothing to do), 1 the patch does not apply, 2 refused
(wrong version, a Jittor outside the project, no Jittor found).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

__all__ = ["ROOT", "PATCH", "JITTOR_VERSION", "PatchError", "RefusedError", "has_cuda_gpu", "find_nvcc",
           "nvcc_version", "route", "jittor_dir", "jittor_version", "parse_patch", "status", "apply",
           "make_copy", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH = os.path.join(ROOT, "scripts", "jittor_cuda13", "jittor_cuda13.patch")
JITTOR_VERSION = "1.3.11"  # the only version the patch is written for
MARKER = ".ccnet_cuda13_patch"  # written into jittor/ after a successful apply: the patch's sha256


class PatchError(RuntimeError):
    """The patch does not apply (a modified or partly patched Jittor)."""


class RefusedError(RuntimeError):
    """The target is not one this tool may change (version, location)."""


# --------------------------------------------------------------------------- GPU, nvcc, route

def has_cuda_gpu() -> bool:
    """True when an NVIDIA GPU is visible to this process (the same test as jittor_env.has_cuda_gpu)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def find_nvcc() -> str | None:
    """The nvcc to ask: $nvcc_path if set (empty: none, as for Jittor), else $CUDA_HOME or /usr/local/cuda,
    else the nvcc on PATH, else a pip-installed one (nvidia/cu13/bin/nvcc on sys.path)."""
    env = os.environ.get("nvcc_path")
    if env is not None:
        return env or None
    for candidate in (os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
                      "/usr/local/cuda/bin/nvcc"):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nvcc")
    if found:
        return found
    for folder in sys.path:
        candidate = os.path.join(folder or ".", "nvidia", "cu13", "bin", "nvcc")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvcc_version(nvcc_path: str | None) -> tuple | None:
    """``(major, minor, build)`` from ``nvcc --version`` (``(major, minor)`` if it shows no build); None if
    there is no such nvcc or its output has no version."""
    if not nvcc_path:
        return None
    try:
        out = subprocess.run([nvcc_path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout + out.stderr
    full = re.search(r"\bV(\d+)\.(\d+)\.(\d+)", text)
    if full:
        return tuple(int(x) for x in full.groups())
    short = re.search(r"release (\d+)\.(\d+)", text)
    return tuple(int(x) for x in short.groups()) if short else None


def route(version: tuple | None, gpu: bool = True) -> str:
    """What Jittor needs for this nvcc: "stock" (CUDA <= 12: unchanged), "patch" (CUDA >= 13), "cpu"
    (no nvcc, or no GPU to use it on)."""
    if not version or not gpu:
        return "cpu"
    return "patch" if version[0] >= 13 else "stock"


# --------------------------------------------------------------------------- the Jittor tree

def jittor_dir(target: str) -> str:
    """The ``jittor`` package folder for ``target``: that folder itself, a folder holding ``jittor/``
    (site-packages or a copy), or a virtual environment."""
    target = os.path.abspath(target)
    candidates = [target, os.path.join(target, "jittor")]
    candidates += sorted(glob.glob(os.path.join(target, "lib", "python3*", "site-packages", "jittor")))
    for c in candidates:
        if os.path.basename(c) == "jittor" and os.path.isfile(os.path.join(c, "__init__.py")) \
                and os.path.isfile(os.path.join(c, "compiler.py")):
            return c
    raise RefusedError(f"no Jittor package found in {target} (looked for jittor/__init__.py there, "
                       "in its jittor/ folder and in lib/python3*/site-packages/jittor); install it first "
                       "(pip install jittor==1.3.11) or point at the right folder")


def jittor_version(jdir: str) -> str | None:
    """``__version__`` from ``jittor/__init__.py`` (read, not imported: importing compiles Jittor)."""
    try:
        with open(os.path.join(jdir, "__init__.py"), encoding="utf-8") as f:
            for line in f:
                m = re.match(r"""\s*__version__\s*=\s*['"]([^'"]+)['"]""", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def _check_version(jdir: str) -> None:
    version = jittor_version(jdir)
    if version is None or not (version == JITTOR_VERSION or version.startswith(JITTOR_VERSION + ".")):
        raise RefusedError(f"{jdir} is Jittor {version or '(version not found)'}; the CUDA-13 patch is written "
                           f"for Jittor {JITTOR_VERSION} only. Install jittor=={JITTOR_VERSION} in the "
                           "project's venv (requirements.txt) and run this again.")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _project_venv(jdir: str, project_root: str) -> str | None:
    """The virtual environment inside ``project_root`` that holds ``jdir``, or None."""
    d = os.path.dirname(os.path.realpath(jdir))
    root = os.path.realpath(project_root)
    while _inside(d, root) and d != root:
        if os.path.isfile(os.path.join(d, "pyvenv.cfg")):
            return d
        d = os.path.dirname(d)
    return None


def _check_location(jdir: str, copy: bool, project_root: str) -> None:
    if _project_venv(jdir, project_root):
        return
    if copy:
        parts = os.path.realpath(jdir).split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            raise RefusedError(f"{jdir} is inside a Python installation's site-packages, not a copy folder; "
                               "this tool never changes a Jittor installed outside the project. Make a copy "
                               "(--copy-to DIR) and patch that.")
        return
    raise RefusedError(f"{jdir} is not in a virtual environment of this project ({project_root}); this tool never "
                       "changes a Jittor the user installed. Either run scripts/setup.sh (the project's .venv) "
                       "and patch that, or patch a copy: --copy-to DIR (then PYTHONPATH=DIR).")


# --------------------------------------------------------------------------- unified diffs

def parse_patch(text: str) -> list[tuple[str, list[tuple[int, int, list[str], list[str]]]]]:
    """``[(path, [(old_start, new_start, old_lines, new_lines), ...]), ...]`` in order; text outside file diffs
    (the comment blocks) is skipped, as patch(1) does. Paths lose their first component (-p1)."""
    lines = text.splitlines(keepends=True)
    files, i = [], 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            path = lines[i + 1][4:].split("\t")[0].strip()
            path = path.split("/", 1)[1] if "/" in path else path
            hunks, i = [], i + 2
            while i < len(lines) and lines[i].startswith("@@ "):
                m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", lines[i])
                if not m:
                    raise PatchError(f"bad hunk header: {lines[i].rstrip()}")
                n_old = int(m.group(2)) if m.group(2) is not None else 1
                n_new = int(m.group(4)) if m.group(4) is not None else 1
                old, new, i = [], [], i + 1
                while (len(old) < n_old or len(new) < n_new) and i < len(lines):
                    line = lines[i]
                    tag, body = (line[0], line[1:]) if line not in ("\n", "\r\n") else (" ", line)
                    if tag == " ":
                        old.append(body)
                        new.append(body)
                    elif tag == "-":
                        old.append(body)
                    elif tag == "+":
                        new.append(body)
                    elif tag == "\\":
                        pass
                    else:
                        raise PatchError(f"hunk of {path} ends early at: {line.rstrip()}")
                    i += 1
                if len(old) != n_old or len(new) != n_new:
                    raise PatchError(f"truncated hunk in {path}")
                hunks.append((int(m.group(1)), int(m.group(3)), old, new))
            files.append((path, hunks))
        else:
            i += 1
    if not files:
        raise PatchError("no file diffs in the patch")
    return files


def _apply_hunks(content: list[str], hunks, reverse: bool) -> list[str] | None:
    """``content`` with the hunks applied (or un-applied), or None if any hunk's text is not found."""
    out = list(content)
    offset = 0  # lines added by the hunks applied so far (forward: they come before the next one)
    for old_start, new_start, old, new in (reversed(hunks) if reverse else hunks):
        if reverse:  # last hunk first: the positions of the earlier ones do not move
            old, new = new, old
            want = max(new_start - 1, 0)
        else:
            want = max(old_start - 1 + offset, 0)
        found = None
        for delta in range(0, len(out) + 1):
            for pos in ((want - delta, want + delta) if delta else (want,)):
                if 0 <= pos <= len(out) - len(old) and out[pos:pos + len(old)] == old:
                    found = pos
                    break
            if found is not None:
                break
        if found is None:
            return None
        out[found:found + len(old)] = new
        offset += len(new) - len(old)
    return out


def _run(files, base: str, reverse: bool) -> dict[str, list[str]] | None:
    """The new content of every file the patch touches (base = the folder holding jittor/), or None."""
    state: dict[str, list[str]] = {}
    for path, hunks in (reversed(files) if reverse else files):
        if path not in state:
            try:
                with open(os.path.join(base, path), encoding="utf-8", newline="") as f:
                    state[path] = f.read().splitlines(keepends=True)
            except OSError:
                return None
        result = _apply_hunks(state[path], hunks, reverse)
        if result is None:
            return None
        state[path] = result
    return state


def _read_patch(patch_file: str):
    with open(patch_file, encoding="utf-8") as f:
        text = f.read()
    return parse_patch(text), hashlib.sha256(text.encode()).hexdigest()


def status(target: str, patch_file: str = PATCH) -> str:
    """"unpatched", "patched" or "neither" (partly patched or changed) for the Jittor at ``target``."""
    jdir = jittor_dir(target)
    files, _ = _read_patch(patch_file)
    base = os.path.dirname(jdir)
    if _run(files, base, reverse=False) is not None:
        return "unpatched"
    if _run(files, base, reverse=True) is not None:
        return "patched"
    return "neither"


def apply(target: str, copy: bool = False, patch_file: str = PATCH, project_root: str = ROOT,
          dry_run: bool = False) -> str:
    """Apply the CUDA-13 patch to the Jittor at ``target``; returns "applied" or "already".

    ``target``: a virtual environment, its site-packages, or a jittor/ folder. Allowed only
    inside a virtual environment within ``project_root`` or, with ``copy=True``, in a copy
    folder (not a site-packages). Raises :class:`RefusedError` (version, location) or
    :class:`PatchError` (the patch does not apply: nothing was written). ``dry_run``: check
    only, write nothing (returns "would apply" or "already").
    """
    jdir = jittor_dir(target)
    _check_version(jdir)
    _check_location(jdir, copy, project_root)
    files, digest = _read_patch(patch_file)
    base = os.path.dirname(jdir)
    marker = os.path.join(jdir, MARKER)
    new = _run(files, base, reverse=False)
    if new is None:
        if _run(files, base, reverse=True) is not None:
            if not dry_run and not os.path.isfile(marker):
                _write(marker, digest + "\n")
            return "already"
        raise PatchError(f"the CUDA-13 patch does not apply to {jdir}, and it is not already applied either: "
                         "the files differ from a pristine Jittor 1.3.11 (changed by hand, or partly patched). "
                         "Nothing was written. Reinstall Jittor there (pip install --force-reinstall --no-deps "
                         f"jittor=={JITTOR_VERSION}.0) and run this again.")
    if dry_run:
        return "would apply"
    for path, content in new.items():
        _write(os.path.join(base, path), "".join(content))
    _write(marker, digest + "\n")
    return "applied"


def _write(path: str, text: str) -> None:
    """Replace a file atomically, keeping its permissions."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_cuda13_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if os.path.exists(path):
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_copy(source: str, dest: str) -> str:
    """Copy ``jittor`` and ``jittor_utils`` (without __pycache__) from the installation at ``source`` into
    ``dest`` (replacing an earlier copy there); returns ``dest``. Put ``dest`` first on PYTHONPATH."""
    jdir = jittor_dir(source)
    _check_version(jdir)
    utils = os.path.join(os.path.dirname(jdir), "jittor_utils")
    if not os.path.isfile(os.path.join(utils, "__init__.py")):
        raise RefusedError(f"jittor_utils not found next to {jdir}")
    os.makedirs(dest, exist_ok=True)
    for src in (jdir, utils):
        out = os.path.join(dest, os.path.basename(src))
        if _inside(out, src) or _inside(src, out):
            raise RefusedError(f"--copy-to {dest} overlaps the installation {src}")
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    return dest


# --------------------------------------------------------------------------- command line

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 done or nothing to do, 1 patch does not apply, 2 refused.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--venv", default=None, help="the project's virtual environment (default .venv)")
    where.add_argument("--jittor-dir", help="a jittor/ folder or the folder holding it (site-packages or a copy)")
    p.add_argument("--copy", action="store_true", help="--jittor-dir is a copy folder made for patching")
    p.add_argument("--copy-to", metavar="DIR", help="copy the venv's (or --jittor-dir's) Jittor to DIR and patch "
                   "the copy; the installation stays as it is")
    p.add_argument("--nvcc", help="the nvcc to ask (default: $nvcc_path, /usr/local/cuda/bin/nvcc, PATH)")
    p.add_argument("--force", action="store_true", help="patch even if no GPU is visible or nvcc is < 13 / missing")
    p.add_argument("--check", action="store_true", help="only report the route and the Jittor's state")
    args = p.parse_args(argv)

    nvcc = args.nvcc or find_nvcc()
    version = nvcc_version(nvcc)
    gpu = has_cuda_gpu()
    way = route(version, gpu)
    shown = ".".join(map(str, version)) if version else "none"
    print(f"jittor_cuda13: nvcc {nvcc or '(not found)'} version {shown}; GPU visible: {'yes' if gpu else 'no'}; "
          f"route: {way}")
    if args.jittor_dir:
        target = os.path.abspath(args.jittor_dir)
    else:
        target = os.path.abspath(args.venv) if args.venv else os.path.join(ROOT, ".venv")
    try:
        if way != "patch" and not args.force:
            reason = {"stock": "CUDA <= 12: stock Jittor builds as it is",
                      "cpu": "no nvcc" if not version else "no NVIDIA GPU visible"}[way]
            print(f"jittor_cuda13: nothing to do ({reason}); Jittor left as installed"
                  + ("" if way == "stock" else " (--force patches anyway)"))
            if args.check:
                print(f"jittor_cuda13: {jittor_dir(target)}: {status(target)}")
            return 0
        if args.check:
            jdir = jittor_dir(target)
            print(f"jittor_cuda13: {jdir}: Jittor {jittor_version(jdir)}, {status(target)}")
            return 0
        copy = args.copy
        if args.copy_to:
            target = make_copy(target, os.path.abspath(args.copy_to))
            copy = True
        result = apply(target, copy=copy)
        print(f"jittor_cuda13: {jittor_dir(target)}: {result}"
              + (" (the patch was applied before)" if result == "already" else ""))
        if args.copy_to:
            print(f"jittor_cuda13: use it with  export PYTHONPATH={target}${{PYTHONPATH:+:$PYTHONPATH}}")
        return 0
    except RefusedError as err:
        print(f"jittor_cuda13: refused: {err}", file=sys.stderr)
        return 2
    except PatchError as err:
        print(f"jittor_cuda13: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
