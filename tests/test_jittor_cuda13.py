"""The CUDA-13 patch for Jittor 1.3.11 and its tools, checked on a machine without a GPU.

Always on *copies* of the installed Jittor (``jittor`` + ``jittor_utils``, ~8 MB) in tmp folders;
the installed package is only read.
"""
import hashlib
import importlib.util
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import jittor_cuda13 as tool  # noqa: E402

TOOL = os.path.join(ROOT, "scripts", "jittor_cuda13.py")
ENV_SCRIPT = os.path.join(ROOT, "scripts", "jittor_cuda13_env.sh")
NVCC = "/usr/local/cuda/bin/nvcc"
TARGETS = ["jittor/extern/cuda/inc/helper_cuda.h", "jittor/compiler.py", "jittor/extern/cuda/cub/ops/cub_where_op.cc",
           "jittor/other/code_softmax.py", "jittor/depthwise_conv.py", "jittor/compile_extern.py", "jittor/nn.py"]


def _installed_jittor() -> str:
    spec = importlib.util.find_spec("jittor")  # finds it without importing (no compilation)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Jittor is not installed")
    jdir = list(spec.submodule_search_locations)[0]
    if tool.jittor_version(jdir) != "1.3.11.0":
        pytest.skip(f"installed Jittor is {tool.jittor_version(jdir)}, the patch is for 1.3.11")
    return jdir


@pytest.fixture(scope="module")
def pristine_tree(tmp_path_factory):
    """A read-only template: copies of the installed jittor/ and jittor_utils/ (no __pycache__)."""
    jdir = _installed_jittor()
    base = tmp_path_factory.mktemp("pristine")
    for src in (jdir, os.path.join(os.path.dirname(jdir), "jittor_utils")):
        shutil.copytree(src, base / os.path.basename(src), ignore=shutil.ignore_patterns("__pycache__"))
    return base


@pytest.fixture
def copy_tree(pristine_tree, tmp_path):
    """A fresh copy folder holding jittor/ and jittor_utils/, for one test to patch."""
    dest = tmp_path / "copy"
    shutil.copytree(pristine_tree, dest)
    return dest


def digests(base) -> dict:
    out = {}
    for rel in TARGETS + ["jittor/__init__.py"]:
        with open(os.path.join(base, rel), "rb") as f:
            out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def read(base, rel) -> str:
    with open(os.path.join(base, rel), encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------- the patch file

def test_patch_file_has_one_commented_diff_per_change():
    with open(tool.PATCH) as f:
        lines = f.read().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("diff ")]
    assert len(headers) == 9
    for n, i in enumerate(headers, 1):
        block = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            block.insert(0, lines[j])
            j -= 1
        tagged = [b for b in block if b.startswith(f"# [{n}/9] ")]
        assert tagged, f"diff {n} ({lines[i]}) has no '# [{n}/9]' comment block before it"
        assert len(block) >= 4, f"diff {n}: the comment says too little"
    files = tool.parse_patch("\n".join(lines) + "\n")
    assert [p for p, _ in files] == ["jittor/extern/cuda/inc/helper_cuda.h", "jittor/compiler.py",
                                     "jittor/extern/cuda/cub/ops/cub_where_op.cc", "jittor/other/code_softmax.py",
                                     "jittor/depthwise_conv.py", "jittor/compile_extern.py",
                                     "jittor/compile_extern.py", "jittor/nn.py", "jittor/compile_extern.py"]


def test_gnu_patch_applies_it_and_gives_the_same_files(copy_tree, tmp_path, pristine_tree):
    if shutil.which("patch") is None:
        pytest.skip("GNU patch is not installed")
    gnu = tmp_path / "gnu"
    shutil.copytree(pristine_tree, gnu)
    with open(tool.PATCH) as f:
        proc = subprocess.run(["patch", "-p1", "--forward", "--fuzz=0", "--no-backup-if-mismatch"], stdin=f,
                              cwd=gnu, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fuzz" not in proc.stdout and "offset" not in proc.stdout, proc.stdout  # every diff is exact
    assert tool.apply(str(copy_tree), copy=True) == "applied"
    assert digests(gnu) == digests(copy_tree)
    with open(tool.PATCH) as f:  # and patch(1) sees the result as patched: -R applies
        rev = subprocess.run(["patch", "-p1", "-R", "--dry-run", "--fuzz=0"], stdin=f, cwd=copy_tree,
                             capture_output=True, text=True)
    assert rev.returncode == 0, rev.stdout


# --------------------------------------------------------------------------- apply

def test_apply_then_already(copy_tree):
    before = digests(copy_tree)
    assert tool.status(str(copy_tree)) == "unpatched"
    assert tool.apply(str(copy_tree), copy=True) == "applied"
    after = digests(copy_tree)
    assert after != before and after["jittor/__init__.py"] == before["jittor/__init__.py"]
    assert all(after[r] != before[r] for r in TARGETS)  # every target file changed
    assert tool.status(str(copy_tree)) == "patched"
    marker = copy_tree / "jittor" / tool.MARKER
    with open(tool.PATCH, "rb") as f:
        assert marker.read_text().strip() == hashlib.sha256(f.read()).hexdigest()
    assert tool.apply(str(copy_tree), copy=True) == "already"
    assert tool.apply(str(copy_tree / "jittor"), copy=True) == "already"  # the jittor/ folder itself
    assert digests(copy_tree) == after
    assert not [p for p in os.listdir(copy_tree / "jittor") if p.startswith(".tmp_")]


def test_modes_are_kept(copy_tree):
    path = copy_tree / "jittor" / "compiler.py"
    os.chmod(path, 0o640)
    tool.apply(str(copy_tree), copy=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("rel, before, after", [
    ("jittor/extern/cuda/inc/helper_cuda.h", ["#ifdef __CUDA_RUNTIME_H__\n// General GPU Device"],
     ["#if defined(__CUDA_RUNTIME_H__) && CUDART_VERSION < 13000\n// General GPU Device"]),
    ("jittor/compiler.py", [], ['        if nvcc_version >= [13]:\n', '            nvcc_flags += " -std=c++17 "\n']),
    ("jittor/extern/cuda/cub/ops/cub_where_op.cc", ["cub::CountingInputIterator<To> counting_itr", "cub::TransformInputIterator<bool"],
     ["thrust::counting_iterator<To> counting_itr(0);",
      "thrust::transform_iterator<NonZeroOp<Ti>, Ti*, bool> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());",
      "#include <thrust/iterator/counting_iterator.h>", "#include <thrust/iterator/transform_iterator.h>"]),
    ("jittor/other/code_softmax.py", ["cub::Max()"], ["Reduce(v1, JtCcclMax())", "struct JtCcclMax {{"]),
    ("jittor/depthwise_conv.py", ["if (cub::LaneId() == 0)"], ['asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane_id));',
                                                     "if (lane_id == 0)"]),
    ("jittor/compile_extern.py", ['"""\n            LOG.f(msg)\n', "            if nvcc_version >= (11,0,0):\n"],
     ['"cudnn_graph.h"', '"libcudnn_graph.so"', '"libcudnn_engines_precompiled.so"',
      '"libcudnn_engines_runtime_compiled.so"', '"libcudnn_heuristic.so"', '"libcudnn_ops.so"', '"libcudnn_cnn.so"',
      '"libcudnn_adv.so"', 'l, ("9",))', 'if lib_name == "cudnn" and "rnn" in fname and globals().get("cudnn_v9"):',
      'os.environ.get("jt_optional_cuda_libs", "cudnn,cufft,cusparse")', "LOG.w(msg)"]),
    ("jittor/nn.py", [], ["and hasattr(jt.cudnn, 'cudnn_rnn_weight_offset')"]),
])
def test_each_change_is_in_the_patched_file(copy_tree, rel, before, after):
    old = read(copy_tree, rel)
    for text in before:
        assert text in old
    for text in after:
        assert text not in old
    tool.apply(str(copy_tree), copy=True)
    new = read(copy_tree, rel)
    for text in before:
        assert text not in new, f"{rel} still has {text!r}"
    for text in after:
        assert text in new, f"{rel} lacks {text!r}"
    assert "ccnet CUDA-13 patch" in new
    if rel == "jittor/nn.py":
        assert new.count("hasattr(jt.cudnn, 'cudnn_rnn_weight_offset')") == 2
    if rel == "jittor/compiler.py":  # the c++17 comes after Jittor's own -std=c++14 conversion, so it wins
        conv = new[new.index("def convert_nvcc_flags"):]
        assert conv.index('"-std=c++17", "-std=c++14') < conv.index('nvcc_flags += " -std=c++17 "')


def test_patched_python_files_compile(copy_tree):
    tool.apply(str(copy_tree), copy=True)
    for rel in TARGETS:
        if rel.endswith(".py"):
            py_compile.compile(str(copy_tree / rel), doraise=True, cfile=str(copy_tree / (rel + "c")))


def test_optional_cuda_libs_switch(copy_tree):
    """The new branch of compile_extern.setup_cuda_extern: a library named in $jt_optional_cuda_libs warns."""
    tool.apply(str(copy_tree), copy=True)
    src = read(copy_tree, "jittor/compile_extern.py")
    block = src[src.index("            # ccnet CUDA-13 patch: the libraries"):src.index("def setup_cuda_lib")]
    calls = []
    env = {"os": os, "LOG": type("L", (), {"w": staticmethod(lambda m: calls.append("w")),
                                           "f": staticmethod(lambda m: calls.append("f"))}), "msg": "m"}
    code = textwrap.dedent(block)
    for lib, setting, want in (("cudnn", None, "w"), ("cublas", None, "f"), ("curand", None, "f"),
                               ("cufft", None, "w"), ("cudnn", "cufft", "f"), ("cublas", "cublas,cudnn", "w")):
        calls.clear()
        saved = os.environ.pop("jt_optional_cuda_libs", None)
        try:
            if setting is not None:
                os.environ["jt_optional_cuda_libs"] = setting
            exec(code, dict(env, lib_name=lib))
        finally:
            os.environ.pop("jt_optional_cuda_libs", None)
            if saved is not None:
                os.environ["jt_optional_cuda_libs"] = saved
        assert calls == [want], (lib, setting)


def test_failed_trial_writes_nothing(copy_tree):
    # a Jittor changed by hand where one hunk's context is: nothing at all may be written
    path = copy_tree / "jittor" / "depthwise_conv.py"
    path.write_text(path.read_text().replace("value = WarpReduce(temp_storage).Sum(value);",
                                             "value = WarpReduce(temp_storage).Sum(value); // edited"))
    before = digests(copy_tree)
    with pytest.raises(tool.PatchError, match="does not apply"):
        tool.apply(str(copy_tree), copy=True)
    assert digests(copy_tree) == before
    assert not (copy_tree / "jittor" / tool.MARKER).exists()
    assert tool.status(str(copy_tree)) == "neither"


def test_partly_patched_tree_is_an_error(copy_tree, pristine_tree):
    tool.apply(str(copy_tree), copy=True)
    shutil.copy(pristine_tree / "jittor" / "nn.py", copy_tree / "jittor" / "nn.py")  # one file back
    before = digests(copy_tree)
    with pytest.raises(tool.PatchError):
        tool.apply(str(copy_tree), copy=True)
    assert digests(copy_tree) == before


def test_wrong_version_is_refused(copy_tree):
    init = copy_tree / "jittor" / "__init__.py"
    init.write_text(init.read_text().replace("__version__ = '1.3.11.0'", "__version__ = '1.3.10.0'"))
    before = digests(copy_tree)
    with pytest.raises(tool.RefusedError, match=r"Jittor 1\.3\.10\.0.*1\.3\.11 only"):
        tool.apply(str(copy_tree), copy=True)
    assert digests(copy_tree) == before
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--copy", "--force"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "refused" in proc.stderr and "1.3.11" in proc.stderr
    assert digests(copy_tree) == before


def test_jittor_outside_the_project_is_refused(copy_tree, tmp_path):
    before = digests(copy_tree)
    with pytest.raises(tool.RefusedError, match="never changes a Jittor the user installed"):
        tool.apply(str(copy_tree))  # not marked as a copy, not in a project venv
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--force"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--copy-to" in proc.stderr
    # a site-packages is never a "copy", even when called one
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(copy_tree, site)
    with pytest.raises(tool.RefusedError, match="site-packages"):
        tool.apply(str(site), copy=True)
    assert digests(copy_tree) == before == digests(site)


def test_a_venv_inside_the_project_is_patched(pristine_tree, tmp_path):
    project = tmp_path / "project"
    venv = project / ".venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    shutil.copytree(pristine_tree, site)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert tool.apply(str(venv), project_root=str(project)) == "applied"
    assert tool.apply(str(venv), project_root=str(project)) == "already"
    # the same tree seen from another project is not "ours"
    with pytest.raises(tool.RefusedError):
        tool.apply(str(venv), project_root=str(tmp_path / "elsewhere"))


def test_dry_run_writes_nothing(copy_tree):
    before = digests(copy_tree)
    assert tool.apply(str(copy_tree), copy=True, dry_run=True) == "would apply"
    assert digests(copy_tree) == before and not (copy_tree / "jittor" / tool.MARKER).exists()


def test_cli_copy_to_leaves_the_source_alone(copy_tree, tmp_path):
    before = digests(copy_tree)
    out = tmp_path / "patched"
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--copy-to", str(out), "--force"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "applied" in proc.stdout and f"PYTHONPATH={out}" in proc.stdout
    assert digests(copy_tree) == before
    assert tool.status(str(out)) == "patched" and (out / "jittor_utils" / "__init__.py").exists()
    assert not list(out.rglob("__pycache__"))


# --------------------------------------------------------------------------- nvcc version and route

FAKE_NVCC = {
    (11, 8): "Cuda compilation tools, release 11.8, V11.8.89\nBuild cuda_11.8.r11.8/compiler.31833905_0",
    (12, 4): "Cuda compilation tools, release 12.4, V12.4.131\nBuild cuda_12.4.r12.4/compiler.34097967_0",
    (13, 0): "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0",
}


def fake_nvcc(folder, text) -> str:
    path = os.path.join(folder, "nvcc")
    with open(path, "w") as f:
        f.write("#!/bin/sh\ncat <<'EOF'\nnvcc: NVIDIA (R) Cuda compiler driver\n"
                f"Copyright (c) 2005-2025 NVIDIA Corporation\n{text}\nEOF\n")
    os.chmod(path, 0o755)
    return path


@pytest.mark.parametrize("version, want", [((11, 8), "stock"), ((12, 4), "stock"), ((13, 0), "patch")])
def test_route_from_nvcc_version(tmp_path, version, want):
    nvcc = fake_nvcc(str(tmp_path), FAKE_NVCC[version])
    got = tool.nvcc_version(nvcc)
    assert got[:2] == version and len(got) == 3
    assert tool.route(got) == want
    assert tool.route(got, gpu=False) == "cpu"


def test_route_without_nvcc(tmp_path):
    assert tool.nvcc_version(str(tmp_path / "missing" / "nvcc")) is None
    assert tool.nvcc_version(None) is None
    assert tool.route(None) == "cpu"
    assert tool.nvcc_version(fake_nvcc(str(tmp_path), "no version here")) is None
    assert tool.route((14, 1)) == "patch"
    assert tool.nvcc_version(fake_nvcc(str(tmp_path), "Cuda compilation tools, release 12.2")) == (12, 2)


def test_cli_check_reports_the_route(tmp_path):
    nvcc = fake_nvcc(str(tmp_path), FAKE_NVCC[(12, 4)])
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, TOOL, "--nvcc", nvcc, "--check"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "version 12.4.131" in proc.stdout and "route: cpu" in proc.stdout and "nothing to do" in proc.stdout
    env["nvcc_path"] = ""  # Jittor's "no CUDA" setting: no nvcc at all
    proc = subprocess.run([sys.executable, TOOL, "--check"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "(not found)" in proc.stdout and "no nvcc" in proc.stdout


def test_gpu_test_is_jittor_envs(monkeypatch):
    import jittor_env
    for value in ("", "-1", None, "0"):
        if value is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert tool.has_cuda_gpu() == jittor_env.has_cuda_gpu()
    for script in ("scripts/setup.sh", "benchmarks/gpu_run.sh"):  # the shell copies of the test
        for value, want in (("", 1), ("-1", 1)):
            proc = subprocess.run(["bash", "-c", f"source <(sed -n '/^gpu_visible()/,/^}}/p' {script}); "
                                   "gpu_visible; echo $?"], cwd=ROOT, capture_output=True, text=True,
                                  env=dict(os.environ, CUDA_VISIBLE_DEVICES=value))
            assert proc.stdout.strip() == str(want), (script, value, proc.stderr)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        proc = subprocess.run(["bash", "-c", f"source <(sed -n '/^gpu_visible()/,/^}}/p' {script}); "
                               "gpu_visible; echo $?"], cwd=ROOT, capture_output=True, text=True, env=env)
        assert proc.stdout.strip() == ("0" if jittor_env.has_cuda_gpu() else "1")


# --------------------------------------------------------------------------- nvcc 13 compiles the patched code

def _nvcc(tmp_path, name, source, *flags):
    if not os.path.isfile(NVCC):
        pytest.skip(f"{NVCC} is not installed")
    path = tmp_path / name
    path.write_text(source)
    return subprocess.run([NVCC, *flags, "-c", str(path), "-o", str(tmp_path / (name + ".o"))],
                          capture_output=True, text=True, timeout=300)


def _nvcc_major():
    v = tool.nvcc_version(NVCC) if os.path.isfile(NVCC) else None
    if not v or v[0] < 13:
        pytest.skip("needs nvcc 13 at /usr/local/cuda")


def test_helper_cuda_h_compiles_with_nvcc13_only_when_patched(copy_tree, pristine_tree, tmp_path):
    _nvcc_major()
    src = "#include <cuda_runtime.h>\n#include <helper_cuda.h>\nint probe() { return _ConvertSMVer2Cores(9, 0); }\n"
    tool.apply(str(copy_tree), copy=True)
    for tree, ok in ((pristine_tree, False), (copy_tree, True)):
        j = tree / "jittor"
        proc = _nvcc(tmp_path, "helper.cu", src, "-std=c++17", f"-I{j}/extern/cuda/inc", f"-I{j}/src")
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        if not ok:
            assert "computeMode" in proc.stdout + proc.stderr or "clockRate" in proc.stdout + proc.stderr


def _cccl_probe(tree) -> str:
    """One CUDA file made of the code lines the patch changes (where op, softmax, depthwise), taken from the tree."""
    where = read(tree, "jittor/extern/cuda/cub/ops/cub_where_op.cc")
    where_lines = "\n".join(line for line in where.splitlines()
                            if "counting_itr(0);" in line or "itr(cond->ptr<Ti>()" in line)
    softmax = read(tree, "jittor/other/code_softmax.py")
    struct = "\n".join(line.replace("{{", "{").replace("}}", "}") for line in softmax.splitlines()
                       if line.startswith("struct "))
    reducer = re.search(r"Reduce\(v1, ([^;]*)\);", softmax).group(1)
    depthwise = read(tree, "jittor/depthwise_conv.py")
    warp = re.search(r"(template <typename T>\s*__device__ __inline__ void CudaAtomicAddWithWarp.*?"
                     r"atomicAdd\(sum, value\);\s*\})", depthwise, re.S).group(1)
    assert where_lines.count("\n") == 1 and warp
    return f"""#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
template <typename T> struct NonZeroOp {{ __host__ __device__ bool operator()(const T& x) const {{ return x != T(0); }} }};
struct FakeVar {{ void* p; template <typename T> T* ptr() {{ return (T*)p; }} }};
template <typename Ti, typename To>
size_t where_probe(FakeVar* cond, To* out_temp, To* num_nonzeros, int N) {{
    size_t temp_storage_bytes = 0;
{where_lines}
    cub::DeviceSelect::Flagged(nullptr, temp_storage_bytes, counting_itr, itr, out_temp, num_nonzeros, N);
    return temp_storage_bytes;
}}
template size_t where_probe<float, int>(FakeVar*, int*, int*, int);
{struct}
__global__ void softmax_probe(const float* x, float* y) {{
    typedef cub::BlockReduce<float, 256> BlockReduce;
    __shared__ typename BlockReduce::TempStorage temp_storage;
    float v1 = x[threadIdx.x];
    auto tmp = BlockReduce(temp_storage).Reduce(v1, {reducer});
    if (threadIdx.x == 0) *y = tmp;
}}
{warp}
__global__ void depthwise_probe(float* sum, const float* v) {{ CudaAtomicAddWithWarp(sum, v[threadIdx.x]); }}
"""


def test_cccl3_code_paths_compile_with_nvcc13_only_when_patched(copy_tree, pristine_tree, tmp_path):
    """The code of hunks 3-5 (cub_where_op.cc, code_softmax.py, depthwise_conv.py) as nvcc 13 sees it, and
    hunk 2's reason: CCCL 3 needs C++17."""
    _nvcc_major()
    tool.apply(str(copy_tree), copy=True)
    arch = ("-arch=sm_90", "-w")
    old = _nvcc(tmp_path, "old.cu", _cccl_probe(pristine_tree), "-std=c++17", *arch)
    text = old.stdout + old.stderr
    assert old.returncode != 0
    for name in ("CountingInputIterator", "TransformInputIterator", "Max", "LaneId"):
        assert name in text, f"the unpatched {name} should not compile with CCCL 3:\n{text[-3000:]}"
    new_src = _cccl_probe(copy_tree)
    new = _nvcc(tmp_path, "new.cu", new_src, "-std=c++17", *arch)
    assert new.returncode == 0, (new.stdout + new.stderr)[-3000:]
    cxx14 = _nvcc(tmp_path, "new14.cu", new_src, "-std=c++14", *arch)
    assert cxx14.returncode != 0 and "C++17" in cxx14.stdout + cxx14.stderr


# --------------------------------------------------------------------------- the environment script

def fake_site(tmp_path, with_curand=True):
    """A site-packages with the pip CUDA 13 layout (empty files in place of the libraries)."""
    sp = tmp_path / "site-packages"
    cu = sp / "nvidia" / "cu13"
    dnn = sp / "nvidia" / "cudnn"
    for d in (cu / "lib", cu / "include", dnn / "lib", dnn / "include"):
        d.mkdir(parents=True)
    for f in ["lib/libcublas.so.13", "lib/libcublasLt.so.13", "lib/libcufft.so.12", "lib/libcusparse.so.12",
              "lib/libcuda.so.1", "include/cublas_v2.h", "include/cufft.h", "include/cusparse.h"] + \
            (["lib/libcurand.so.10", "include/curand.h"] if with_curand else []):
        (cu / f).write_text("")
    for f in ["lib/libcudnn.so.9", "lib/libcudnn_graph.so.9", "include/cudnn.h", "include/cudnn_graph.h"]:
        (dnn / f).write_text("")
    return sp


def env_script(*args, env_extra=None, source=False):
    env = {k: v for k, v in os.environ.items() if k not in ("use_nccl", "use_mkl", "LD_LIBRARY_PATH", "nvcc_path")}
    env.update(env_extra or {})
    if source:
        cmd = ["bash", "-c", 'source "$0" "$@"; rc=$?; echo "rc=$rc nvcc_path=$nvcc_path use_cutt=$use_cutt '
               'FIX_TORCH_ERROR=$FIX_TORCH_ERROR PYTHONPATH=$PYTHONPATH"; '
               'type _jtcuda13_build >/dev/null 2>&1 && echo LEAKED', ENV_SCRIPT, *args]
    else:
        cmd = ["bash", ENV_SCRIPT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_env_script_builds_the_merged_tree(tmp_path):
    if not os.path.isfile(NVCC):
        pytest.skip("needs an nvcc")
    sp = fake_site(tmp_path)
    tree = tmp_path / "jtcuda"
    proc = env_script(str(sp), env_extra={"JT_CUDA_TREE": str(tree), "use_nccl": "0"})
    assert proc.returncode == 0, proc.stderr
    exports = dict(re.findall(r"^export (\w+)=(.*)$", proc.stdout, re.M))
    assert exports["nvcc_path"] == f"{tree}/bin/nvcc"
    assert exports["use_cutt"] == "0" and exports["use_cutlass"] == "0" and exports["use_nccl"] == "0"
    assert exports["FIX_TORCH_ERROR"] == "0" and exports["use_mkl"] == "0"
    assert exports["LD_LIBRARY_PATH"].split(":")[0] == f"{tree}/lib64"
    nvcc = tree / "bin" / "nvcc"
    assert nvcc.is_file() and not nvcc.is_symlink() and os.access(nvcc, os.X_OK)
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True)
    assert "release" in out.stdout
    lib = tree / "lib64"
    for name, target in (("libcublas.so", "libcublas.so.13"), ("libcudnn.so", "libcudnn.so.9"),
                         ("libcurand.so", "libcurand.so.10"), ("libcudnn_graph.so", "libcudnn_graph.so.9")):
        assert os.readlink(lib / name) == target
    assert os.path.realpath(lib / "libcublas.so") == str(sp / "nvidia" / "cu13" / "lib" / "libcublas.so.13")
    assert not list(lib.glob("libcuda.so*"))  # the driver's library must come from the driver
    assert (lib / "libcudart.so").exists()  # the toolkit's, first
    assert os.path.realpath(tree / "include" / "cuda_runtime.h").startswith(os.path.realpath("/usr/local/cuda"))
    for h in ("cublas_v2.h", "cudnn.h", "cudnn_graph.h", "curand.h"):
        assert (tree / "include" / h).exists()
    # again: the same tree, rebuilt
    again = env_script(str(sp), env_extra={"JT_CUDA_TREE": str(tree)})
    assert again.returncode == 0 and again.stdout == proc.stdout


def test_env_script_sourced_sets_the_variables(tmp_path):
    if not os.path.isfile(NVCC):
        pytest.skip("needs an nvcc")
    sp = fake_site(tmp_path)
    copy = tmp_path / "jt"
    (copy / "jittor").mkdir(parents=True)
    (copy / "jittor" / "__init__.py").write_text("")
    proc = env_script(str(sp), str(copy), env_extra={"JT_CUDA_TREE": str(tmp_path / "t")}, source=True)
    assert f"rc=0 nvcc_path={tmp_path}/t/bin/nvcc use_cutt=0 FIX_TORCH_ERROR=0 PYTHONPATH={copy}" in proc.stdout
    assert "LEAKED" not in proc.stdout


def test_env_script_errors(tmp_path):
    if not os.path.isfile(NVCC):
        pytest.skip("needs an nvcc")
    proc = env_script(str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "usage" in proc.stderr
    sp = fake_site(tmp_path, with_curand=False)
    proc = env_script(str(sp), env_extra={"JT_CUDA_TREE": str(tmp_path / "t")})
    assert proc.returncode == 1 and "libcurand.so" in proc.stderr and "pip install" in proc.stderr
    assert "export" not in proc.stdout
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    proc = env_script(str(fake_site(tmp_path / "b")), env_extra={"JT_CUDA_TREE": str(foreign)})
    assert proc.returncode == 2 and "not made by this script" in proc.stderr
    assert (foreign / "precious.txt").read_text() == "keep"
    proc = env_script(str(sp), env_extra={"JT_CUDA_TREE": str(tmp_path / "t2"), "JT_NVCC": str(tmp_path / "none")})
    assert proc.returncode == 1 and "no nvcc" in proc.stderr


def test_env_script_with_nccl(tmp_path):
    if not os.path.isfile(NVCC):
        pytest.skip("needs an nvcc")
    sp = fake_site(tmp_path)
    nccl = sp / "nvidia" / "nccl"
    (nccl / "lib").mkdir(parents=True)
    (nccl / "include").mkdir()
    (nccl / "lib" / "libnccl.so.2").write_text("")
    (nccl / "include" / "nccl.h").write_text("")
    tree = tmp_path / "t"
    proc = env_script(str(sp), env_extra={"JT_CUDA_TREE": str(tree), "use_nccl": "1"})
    assert proc.returncode == 0, proc.stderr
    assert f"export nccl_include_path={tree}/include" in proc.stdout
    assert f"export nccl_lib_path={tree}/lib64" in proc.stdout and "export use_nccl=1" in proc.stdout


@pytest.mark.parametrize("script", ["scripts/jittor_cuda13_env.sh", "scripts/setup.sh", "scripts/fetch_gpu_wheels.sh",
                                    "benchmarks/gpu_run.sh"])
def test_shell_scripts_are_clean(script):
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(["shellcheck", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
