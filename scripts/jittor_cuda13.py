"""Jittor 1.3.11 with nvcc 13 or cuDNN 9: decide which of the project's patches Jittor needs, and apply them.

Stock Jittor 1.3.11 builds its CUDA backend with nvcc 10.2-12.x and loads
cuDNN 7/8 only. The patch files in ``scripts/jittor_cuda13/`` are split by
cause, each change explained there:

* ``nvcc13.patch`` -- nvcc 13 or later (CCCL 3, CUDA 13's device properties,
  optional cuFFT / cuSPARSE);
* ``cudnn9.patch`` -- cuDNN 9 or later, with any CUDA version (cuDNN 9's library
  names; its legacy RNN API is gone);
* ``fp32-accum.patch`` -- optional, never chosen by the route: float16 cuDNN
  convolutions accumulate in float32 (``--with fp32-accum``).

This tool, standard library only:

* :func:`find_nvcc`, :func:`nvcc_version` -- the nvcc Jittor will use (searched in
  Jittor's order) and the ``(major, minor[, build])`` it reports;
* :func:`cudnn_search_dirs`, :func:`find_cudnn` -- the cuDNN Jittor will use: the
  header and library found where ``jittor.compile_extern.setup_cuda_lib`` looks
  (next to that nvcc, its ``targets/<arch>-linux``, then ``/usr/include`` and
  ``/usr/lib[/<arch>-linux-gnu]``; a pip cuDNN is found there when
  ``scripts/jittor_cuda13_env.sh`` has pointed ``$nvcc_path`` at its merged tree),
  and its major version (``CUDNN_MAJOR``, else the library's ``.so.N``);
* :func:`route` -- the patches needed, e.g. ``("nvcc13", "cudnn9")``, ``("cudnn9",)``
  or ``()`` (stock Jittor), and ``"cpu"`` without nvcc or without a visible GPU;
* :func:`apply` -- applies patches to a Jittor *this project* installed (a virtual
  environment inside the project folder) or to an explicit copy folder, never to a
  Jittor the user installed elsewhere. It checks the version (1.3.11) first, is
  idempotent (``"applied"`` the first time, ``"already"`` after; a marker file
  per patch in ``jittor/``), and writes nothing unless every patch asked for
  either applies or is already applied in full;
* :func:`make_copy` -- copies ``jittor`` and ``jittor_utils`` into a folder (to patch the
  copy and put it first on ``PYTHONPATH`` instead of touching an installation).

The patches are applied by a small unified-diff applier in this file (exact
context, line offsets allowed, no fuzz), so the GNU ``patch`` program is not
needed; the tests check that ``patch -p1`` gives byte-identical files. Where
two patch files change the same Jittor file they change different lines, so
any subset applies in any order.

Command line::

    python scripts/jittor_cuda13.py                       # the project's .venv: route, then the patches it needs
    python scripts/jittor_cuda13.py --check               # only say what was found and what would be done
    python scripts/jittor_cuda13.py --with fp32-accum     # the route's patches and the optional one
    python scripts/jittor_cuda13.py --venv work_dirs/gpu_venv
    python scripts/jittor_cuda13.py --copy-to /tmp/jt     # patch a copy of .venv's Jittor, print PYTHONPATH
    python scripts/jittor_cuda13.py --jittor-dir DIR --copy --patches nvcc13,cudnn9   # these, whatever the route

Exit status: 0 done (or nothing to do), 1 a patch does not apply, 2 refused
(wrong version, a Jittor outside the project, no Jittor found, unknown patch).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

__all__ = ["ROOT", "PATCH_DIR", "PATCHES", "OPTIONAL", "JITTOR_VERSION", "PatchError", "RefusedError",
           "CudnnInfo", "has_cuda_gpu", "find_nvcc", "nvcc_version", "cudnn_search_dirs", "find_cudnn", "route",
           "jittor_dir", "jittor_version", "parse_patch", "status", "apply", "make_copy", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH_DIR = os.path.join(ROOT, "scripts", "jittor_cuda13")
#: The patch files by name, in the order they are applied (any order works: they touch different lines).
PATCHES = {name: os.path.join(PATCH_DIR, name + ".patch") for name in ("nvcc13", "cudnn9", "fp32-accum")}
#: Patches the route never chooses; only ``--with`` / ``--patches`` apply them.
OPTIONAL = ("fp32-accum",)
JITTOR_VERSION = "1.3.11"  # the only version the patches are written for
MARKER = ".ccnet_patch_{}"  # written into jittor/ once a patch is in place: that patch file's sha256


class PatchError(RuntimeError):
    """A patch does not apply (a modified or partly patched Jittor)."""


class RefusedError(RuntimeError):
    """The target is not one this tool may change (version, location), or the request is not valid."""


# --------------------------------------------------------------------------- GPU, nvcc, cuDNN, route

def has_cuda_gpu() -> bool:
    """True when an NVIDIA GPU is visible to this process (the same test as jittor_env.has_cuda_gpu)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def find_nvcc() -> str | None:
    """The nvcc Jittor 1.3.11 will use, found in its order (``jittor/compiler.py``): ``$nvcc_path`` if set
    (empty: none), else ``nvcc`` on PATH, else /usr/local/cuda/bin/nvcc, /usr/bin/nvcc, /opt/cuda/bin/nvcc."""
    env = os.environ.get("nvcc_path")
    if env is not None:
        return env or None
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc", "/usr/bin/nvcc", "/opt/cuda/bin/nvcc"):
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


def _arch() -> str:
    return "x86_64" if platform.machine() in ("x86_64", "AMD64") else "aarch64"


def cudnn_search_dirs(nvcc_path: str, root: str = "/") -> tuple[list[str], list[str]]:
    """``(header folders, library folders)`` in the order Jittor 1.3.11 searches them for cuDNN.

    From ``compiler.check_cuda`` and ``compile_extern.setup_cuda_lib``: the CUDA
    folder is the one of ``nvcc_path`` with its links resolved; headers come from
    its ``include``, ``targets/<arch>-linux/include`` and ``/usr/include``,
    libraries from its ``bin``, ``lib64`` (``/usr/lib/<arch>-linux-gnu`` for
    ``/usr/bin/nvcc``), ``targets/<arch>-linux/lib``, ``/usr/lib/<arch>-linux-gnu``
    and ``/usr/lib``. ``root`` replaces ``/`` in the system folders (for tests).
    """
    full = os.path.abspath(nvcc_path)
    while os.path.islink(full):
        full = os.path.realpath(full)
    arch = _arch()
    system_lib = os.path.join(root, "usr", "lib", f"{arch}-linux-gnu")
    cuda_bin = os.path.dirname(full)
    cuda_include = os.path.abspath(os.path.join(cuda_bin, "..", "include"))
    cuda_lib = system_lib if nvcc_path == "/usr/bin/nvcc" else os.path.abspath(os.path.join(cuda_bin, "..", "lib64"))
    headers = [cuda_include, os.path.abspath(os.path.join(cuda_include, "..", "targets", f"{arch}-linux", "include")),
               os.path.join(root, "usr", "include")]
    libraries = [cuda_bin, cuda_lib, os.path.abspath(os.path.join(cuda_lib, "..", "targets", f"{arch}-linux", "lib")),
                 system_lib, os.path.join(root, "usr", "lib")]
    return headers, libraries


class CudnnInfo(NamedTuple):
    """What :func:`find_cudnn` found; ``major`` is the header's, else the library's."""
    major: int | None
    version: str | None        # "9.1.0" from the header, "9" from a library name
    header: str | None         # the cudnn.h Jittor compiles against
    library: str | None        # the libcudnn.so Jittor links (resolved), or a libcudnn.so.N it would not find
    note: str = ""             # what does not fit (a library Jittor will not find, header and library differ)


def _header_version(folder: str) -> tuple[int, str] | None:
    """CUDNN_MAJOR.MINOR.PATCHLEVEL from cudnn_version.h (cuDNN 8+) or cudnn.h (cuDNN 7) in ``folder``."""
    for name in ("cudnn_version.h", "cudnn.h"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        parts = [re.search(rf"#\s*define\s+CUDNN_{key}\s+(\d+)", text) for key in ("MAJOR", "MINOR", "PATCHLEVEL")]
        if parts[0]:
            return int(parts[0].group(1)), ".".join(m.group(1) for m in parts if m)
    return None


def _library_major(path: str) -> int | None:
    m = re.fullmatch(r"libcudnn\.so\.(\d+)(?:\.[\d.]*)?", os.path.basename(os.path.realpath(path)))
    return int(m.group(1)) if m else None


def find_cudnn(headers: list[str], libraries: list[str], nvcc_major: int | None = None) -> CudnnInfo:
    """The cuDNN in ``headers`` / ``libraries`` (:func:`cudnn_search_dirs`) that Jittor would take: the first
    cudnn.h, and the first libcudnn.so (libcudnn.so.8 first for nvcc 11, as Jittor prefers)."""
    header = next((os.path.join(d, "cudnn.h") for d in headers if os.path.isfile(os.path.join(d, "cudnn.h"))), None)
    from_header = _header_version(os.path.dirname(header)) if header else None
    names = ["libcudnn.so.8", "libcudnn.so"] if nvcc_major == 11 else ["libcudnn.so"]
    library = next((os.path.join(d, n) for d in libraries for n in names if os.path.isfile(os.path.join(d, n))),
                   None)
    notes = []
    if library is None:
        versioned = sorted(p for d in libraries for p in glob.glob(os.path.join(d, "libcudnn.so.*"))
                           if _library_major(p) is not None)
        if versioned:
            library = versioned[-1]
            notes.append(f"Jittor links libcudnn.so, but only {os.path.basename(library)} is there "
                         "(add the unversioned link, as scripts/jittor_cuda13_env.sh does)")
    library_major = _library_major(library) if library else None
    if from_header and library_major is not None and from_header[0] != library_major:
        notes.append(f"the header is cuDNN {from_header[1]} but the library is cuDNN {library_major}")
    if header and not from_header:
        notes.append(f"no CUDNN_MAJOR in {os.path.dirname(header)}/cudnn_version.h or cudnn.h")
    if from_header:
        major, version = from_header
    elif library_major is not None:
        major, version = library_major, str(library_major)
    else:
        major = version = None
    return CudnnInfo(major, version, header, os.path.realpath(library) if library else None, "; ".join(notes))


def route(version: tuple | None, cudnn_major: int | None = None, gpu: bool = True) -> tuple[str, ...] | str:
    """The patches Jittor needs: "nvcc13" for nvcc >= 13, "cudnn9" for cuDNN >= 9, in that order; ``()``
    when stock Jittor builds as it is; "cpu" without nvcc or without a GPU to use it on."""
    if not version or not gpu:
        return "cpu"
    need = []
    if version[0] >= 13:
        need.append("nvcc13")
    if cudnn_major is not None and cudnn_major >= 9:
        need.append("cudnn9")
    return tuple(need)


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
        raise RefusedError(f"{jdir} is Jittor {version or '(version not found)'}; the patches are written "
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


def _run(files, base: str, reverse: bool, state: dict | None = None) -> dict[str, list[str]] | None:
    """``state`` (path -> lines; files not in it are read from ``base``, the folder holding jittor/) with the
    patch applied (or un-applied) to every file it touches; None if a hunk does not fit."""
    state = dict(state or {})
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


def _read_patch(name: str):
    if name not in PATCHES:
        raise RefusedError(f"unknown patch {name!r}; the patches are {', '.join(PATCHES)}")
    with open(PATCHES[name], encoding="utf-8") as f:
        text = f.read()
    return parse_patch(text), hashlib.sha256(text.encode()).hexdigest()


def status(target: str, name: str) -> str:
    """"unpatched", "patched" or "neither" (partly patched or changed): patch ``name`` in the Jittor at ``target``."""
    base = os.path.dirname(jittor_dir(target))
    files, _ = _read_patch(name)
    if _run(files, base, reverse=False) is not None:
        return "unpatched"
    if _run(files, base, reverse=True) is not None:
        return "patched"
    return "neither"


def apply(target: str, patches, copy: bool = False, project_root: str = ROOT, dry_run: bool = False) -> dict:
    """Apply the named patches to the Jittor at ``target``; returns ``{name: "applied" or "already"}``.

    ``target``: a virtual environment, its site-packages, or a jittor/ folder. Allowed only
    inside a virtual environment within ``project_root`` or, with ``copy=True``, in a copy
    folder (not a site-packages). Raises :class:`RefusedError` (version, location, unknown
    name) or :class:`PatchError` (a patch neither applies nor is in place in full: nothing
    was written). ``dry_run``: check only, write nothing ("would apply" for "applied").
    """
    jdir = jittor_dir(target)
    _check_version(jdir)
    _check_location(jdir, copy, project_root)
    unknown = [name for name in patches if name not in PATCHES]
    if unknown:
        raise RefusedError(f"unknown patch {', '.join(unknown)}; the patches are {', '.join(PATCHES)}")
    patches = [name for name in PATCHES if name in patches]
    base = os.path.dirname(jdir)
    state: dict[str, list[str]] = {}
    changed: set[str] = set()
    results, digests = {}, {}
    for name in patches:
        files, digests[name] = _read_patch(name)
        new = _run(files, base, reverse=False, state=state)
        if new is not None:
            state = new
            changed.update(path for path, _ in files)
            results[name] = "applied"
        elif _run(files, base, reverse=True, state=state) is not None:
            results[name] = "already"
        else:
            raise PatchError(f"{os.path.basename(PATCHES[name])} does not apply to {jdir}, and it is not in place "
                             "in full either: the files differ from a pristine Jittor 1.3.11 (changed by hand, "
                             "partly patched, or patched by an older version of this tool). Nothing was written. "
                             "Reinstall Jittor there (pip install --force-reinstall --no-deps "
                             f"jittor=={JITTOR_VERSION}.0) "
                             "and run this again.")
    if dry_run:
        return {name: "would apply" if r == "applied" else r for name, r in results.items()}
    for path in sorted(changed):
        _write(os.path.join(base, path), "".join(state[path]))
    for name in patches:
        marker = os.path.join(jdir, MARKER.format(name))
        if results[name] == "applied" or not os.path.isfile(marker):
            _write(marker, digests[name] + "\n")
    return results


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

def _names(values) -> list[str]:
    """Patch names from comma- or space-separated strings."""
    return [n for v in values for n in re.split(r"[,\s]+", v) if n]


def _describe_cudnn(nvcc: str | None, version: tuple | None, cudnn: CudnnInfo | None) -> str:
    if cudnn is None:
        return "not looked for (no nvcc)"
    if cudnn.major is None:
        headers, libraries = cudnn_search_dirs(nvcc)
        return (f"not found (no cudnn.h in {', '.join(headers)}; no libcudnn.so in {', '.join(libraries)})"
                + (f"; {cudnn.note}" if cudnn.note else ""))
    where = []
    if cudnn.header:
        real = os.path.realpath(cudnn.header)
        where.append(f"header {cudnn.header}" + (f" -> {real}" if real != cudnn.header else ""))
    where.append(f"library {cudnn.library}" if cudnn.library else "no library found")
    return f"{cudnn.version} ({'; '.join(where)})" + (f"; {cudnn.note}" if cudnn.note else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 done or nothing to do, 1 a patch does not apply, 2 refused.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--venv", default=None, help="the project's virtual environment (default .venv)")
    where.add_argument("--jittor-dir", help="a jittor/ folder or the folder holding it (site-packages or a copy)")
    p.add_argument("--copy", action="store_true", help="--jittor-dir is a copy folder made for patching")
    p.add_argument("--copy-to", metavar="DIR", help="copy the venv's (or --jittor-dir's) Jittor to DIR and patch "
                   "the copy; the installation stays as it is")
    p.add_argument("--nvcc", help="the nvcc to ask (default: the one Jittor uses: $nvcc_path, PATH, /usr/local/cuda)")
    p.add_argument("--with", dest="extra", action="append", default=[], metavar="PATCH",
                   help="apply this patch as well as the route's (repeatable or comma-separated); "
                        "fp32-accum: float16 cuDNN convolutions accumulate in float32")
    p.add_argument("--patches", metavar="LIST", help="apply exactly these patches (comma-separated, from "
                   f"{','.join(PATCHES)}) instead of the route's, with or without a GPU")
    p.add_argument("--check", action="store_true", help="only report what was found, the route and the Jittor's state")
    args = p.parse_args(argv)

    nvcc = args.nvcc or find_nvcc()
    version = nvcc_version(nvcc)
    gpu = has_cuda_gpu()
    cudnn = find_cudnn(*cudnn_search_dirs(nvcc), nvcc_major=version[0]) if version else None
    way = route(version, cudnn.major if cudnn else None, gpu)
    shown = ".".join(map(str, version)) if version else "none"
    print(f"jittor_cuda13: nvcc {nvcc or '(not found)'} version {shown}; GPU visible: {'yes' if gpu else 'no'}")
    if version and not os.path.isfile(os.path.join(cudnn_search_dirs(nvcc)[0][0], "cuda_runtime.h")):
        print(f"jittor_cuda13: note: no cuda_runtime.h in {cudnn_search_dirs(nvcc)[0][0]}, where Jittor will look for "
              "CUDA's headers next to this nvcc (a wrapper script?); set $nvcc_path to the toolkit's own nvcc")
    print(f"jittor_cuda13: cuDNN {_describe_cudnn(nvcc, version, cudnn)}")
    if way == "cpu":
        reason = "no nvcc" if not version else "no NVIDIA GPU visible"
        print(f"jittor_cuda13: route: cpu ({reason})")
    else:
        print(f"jittor_cuda13: route: {', '.join(way) or 'stock Jittor (no patch needed)'}")
    if args.jittor_dir:
        target = os.path.abspath(args.jittor_dir)
    else:
        target = os.path.abspath(args.venv) if args.venv else os.path.join(ROOT, ".venv")
    try:
        wanted = _names([args.patches]) if args.patches is not None else list(way if way != "cpu" else ())
        wanted += [n for n in _names(args.extra) if n not in wanted]
        unknown = [n for n in wanted if n not in PATCHES]
        if unknown:
            raise RefusedError(f"unknown patch {', '.join(unknown)}; the patches are {', '.join(PATCHES)}")
        if args.check:
            jdir = jittor_dir(target)
            states = ", ".join(f"{name} {status(target, name)}" for name in PATCHES)
            print(f"jittor_cuda13: {jdir}: Jittor {jittor_version(jdir)}; {states}")
            print(f"jittor_cuda13: would apply: {', '.join(wanted) or 'nothing'}")
            return 0
        if not wanted:
            if way == "cpu":
                reason = ("no nvcc" if not version else "no NVIDIA GPU visible") + "; --patches applies patches anyway"
            else:
                reason = f"nvcc {shown} with cuDNN {cudnn.version if cudnn and cudnn.version else '(none found)'}: " \
                         "stock Jittor builds as it is"
            print(f"jittor_cuda13: nothing to do ({reason}); Jittor left as installed")
            return 0
        copy = args.copy
        if args.copy_to:
            target = make_copy(target, os.path.abspath(args.copy_to))
            copy = True
        results = apply(target, wanted, copy=copy)
        print(f"jittor_cuda13: {jittor_dir(target)}: "
              + ", ".join(f"{name} {result}" + (" (in place before)" if result == "already" else "")
                          for name, result in results.items()))
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
