"""The Jittor 1.3.11 patches (nvcc 13, cuDNN 9, float32 accumulation) and their tools, checked without a GPU.

Always on *copies* of the installed Jittor (``jittor`` + ``jittor_utils``, ~8 MB) in tmp folders;
the installed package is only read.
"""
import hashlib
import importlib.util
import itertools
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
OPS = "jittor/extern/cuda/cudnn/ops/"
#: The Jittor files each patch changes: the split by cause.
FILES = {
    "nvcc13": ["jittor/extern/cuda/inc/helper_cuda.h", "jittor/compiler.py",
               "jittor/extern/cuda/cub/ops/cub_where_op.cc", "jittor/other/code_softmax.py", "jittor/depthwise_conv.py",
               "jittor/compile_extern.py"],
    "cudnn9": ["jittor/compile_extern.py", "jittor/compile_extern.py", "jittor/nn.py"],
    "fp32-accum": [OPS + f for f in ("cudnn_conv_op.cc", "cudnn_conv_backward_x_op.cc", "cudnn_conv_backward_w_op.cc",
                                     "cudnn_conv3d_op.cc", "cudnn_conv3d_backward_x_op.cc",
                                     "cudnn_conv3d_backward_w_op.cc")],
}
TARGETS = sorted({f for files in FILES.values() for f in files})
ALL = list(tool.PATCHES)


def _installed_jittor() -> str:
    spec = importlib.util.find_spec("jittor")  # finds it without importing (no compilation)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Jittor is not installed")
    jdir = list(spec.submodule_search_locations)[0]
    if tool.jittor_version(jdir) != "1.3.11.0":
        pytest.skip(f"installed Jittor is {tool.jittor_version(jdir)}, the patches are for 1.3.11")
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


def gnu_patch(tree, names):
    """GNU patch -p1 of each named patch file in turn on ``tree``; the finished processes."""
    procs = []
    for name in names:
        with open(tool.PATCHES[name]) as f:
            procs.append(subprocess.run(["patch", "-p1", "--forward", "--fuzz=0", "--no-backup-if-mismatch"],
                                        stdin=f, cwd=tree, capture_output=True, text=True))
    return procs


# --------------------------------------------------------------------------- the patch files

@pytest.mark.parametrize("name", ALL)
def test_each_patch_file_has_one_commented_diff_per_change(name):
    with open(tool.PATCHES[name]) as f:
        text = f.read()
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("diff ")]
    assert len(headers) == len(FILES[name])
    for n, i in enumerate(headers, 1):
        block = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            block.insert(0, lines[j])
            j -= 1
        assert any(b.startswith(f"# [{n}/{len(headers)}] ") for b in block), \
            f"{name} diff {n} ({lines[i]}) has no '# [{n}/{len(headers)}]' comment block before it"
        assert len(block) >= 5, f"{name} diff {n}: the comment says too little"
    assert [p for p, _ in tool.parse_patch(text)] == FILES[name]
    # every added line that is code says which patch it belongs to, nearby
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert sum(f"ccnet {name} patch" in line for line in added) >= len(headers)
    for other in ALL:
        if other != name:
            assert f"ccnet {other} patch" not in "\n".join(added)


# --------------------------------------------------------------------------- apply: alone, together, GNU patch

@pytest.mark.parametrize("name", ALL)
def test_each_patch_applies_alone_and_only_changes_its_files(copy_tree, name):
    before = digests(copy_tree)
    assert {n: tool.status(str(copy_tree), n) for n in ALL} == {n: "unpatched" for n in ALL}
    assert tool.apply(str(copy_tree), [name], copy=True) == {name: "applied"}
    after = digests(copy_tree)
    assert {rel for rel in before if before[rel] != after[rel]} == set(FILES[name])
    assert {n: tool.status(str(copy_tree), n) for n in ALL} == {n: "patched" if n == name else "unpatched"
                                                               for n in ALL}
    marker = copy_tree / "jittor" / tool.MARKER.format(name)
    with open(tool.PATCHES[name], "rb") as f:
        assert marker.read_text().strip() == hashlib.sha256(f.read()).hexdigest()
    assert tool.apply(str(copy_tree), [name], copy=True) == {name: "already"}
    assert tool.apply(str(copy_tree / "jittor"), [name], copy=True) == {name: "already"}  # the jittor/ folder itself
    assert digests(copy_tree) == after
    assert not [p for p in os.listdir(copy_tree / "jittor") if p.startswith(".tmp_")]


def test_every_combination_in_every_order_gives_the_same_files(pristine_tree, tmp_path):
    """Any subset of the patches applies in any order, with this tool or with GNU patch, to the same files;
    and each subset's result holds exactly its patches."""
    have_gnu = shutil.which("patch") is not None
    for k in range(1, len(ALL) + 1):
        for subset in itertools.combinations(ALL, k):
            results = set()
            for order in itertools.permutations(subset):
                tree = tmp_path / ("-".join(order))
                shutil.copytree(pristine_tree, tree)
                for name in order:  # one call per patch, in this order
                    assert tool.apply(str(tree), [name], copy=True) == {name: "applied"}
                results.add(tuple(sorted(digests(tree).items())))
                assert {n: tool.status(str(tree), n) for n in ALL} == \
                    {n: "patched" if n in subset else "unpatched" for n in ALL}
                if have_gnu:
                    gnu = tmp_path / ("gnu-" + "-".join(order))
                    shutil.copytree(pristine_tree, gnu)
                    for proc in gnu_patch(gnu, order):
                        assert proc.returncode == 0, proc.stdout + proc.stderr
                        assert "fuzz" not in proc.stdout, proc.stdout
                    assert digests(gnu) == digests(tree), order
                    shutil.rmtree(gnu)
                shutil.rmtree(tree)
            assert len(results) == 1, subset
    if not have_gnu:
        pytest.skip("GNU patch is not installed (the tool's own orders were checked)")


def test_one_call_applies_several_and_gnu_patch_sees_them_applied(copy_tree, tmp_path, pristine_tree):
    assert tool.apply(str(copy_tree), ["fp32-accum", "nvcc13", "cudnn9"], copy=True) == \
        {"nvcc13": "applied", "cudnn9": "applied", "fp32-accum": "applied"}
    if shutil.which("patch") is None:
        pytest.skip("GNU patch is not installed")
    for name in ALL:  # patch(1) sees each as applied: -R applies exactly
        with open(tool.PATCHES[name]) as f:
            rev = subprocess.run(["patch", "-p1", "-R", "--dry-run", "--fuzz=0"], stdin=f, cwd=copy_tree,
                                 capture_output=True, text=True)
        assert rev.returncode == 0, (name, rev.stdout)
    alone = tmp_path / "gnu"
    shutil.copytree(pristine_tree, alone)
    for proc in gnu_patch(alone, ALL):
        assert proc.returncode == 0 and "fuzz" not in proc.stdout, proc.stdout
    assert digests(alone) == digests(copy_tree)


def test_modes_are_kept(copy_tree):
    path = copy_tree / "jittor" / "compiler.py"
    os.chmod(path, 0o640)
    tool.apply(str(copy_tree), ["nvcc13"], copy=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("name, rel, before, after", [
    ("nvcc13", "jittor/extern/cuda/inc/helper_cuda.h", ["#ifdef __CUDA_RUNTIME_H__\n// General GPU Device"],
     ["#if defined(__CUDA_RUNTIME_H__) && CUDART_VERSION < 13000\n// General GPU Device"]),
    ("nvcc13", "jittor/compiler.py", [],
     ['        if nvcc_version >= [13]:\n', '            nvcc_flags += " -std=c++17 "\n']),
    ("nvcc13", "jittor/extern/cuda/cub/ops/cub_where_op.cc",
     ["cub::CountingInputIterator<To> counting_itr", "cub::TransformInputIterator<bool"],
     ["thrust::counting_iterator<To> counting_itr(0);",
      "thrust::transform_iterator<NonZeroOp<Ti>, Ti*, bool> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());",
      "#include <thrust/iterator/counting_iterator.h>", "#include <thrust/iterator/transform_iterator.h>"]),
    ("nvcc13", "jittor/other/code_softmax.py", ["cub::Max()"], ["Reduce(v1, JtCcclMax())", "struct JtCcclMax {{"]),
    ("nvcc13", "jittor/depthwise_conv.py", ["if (cub::LaneId() == 0)"],
     ['asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane_id));', "if (lane_id == 0)"]),
    ("nvcc13", "jittor/compile_extern.py", ['"""\n            LOG.f(msg)\n'],
     ['os.environ.get("jt_optional_cuda_libs", "cudnn,cufft,cusparse")', "LOG.w(msg)"]),
    ("cudnn9", "jittor/compile_extern.py", ["            if nvcc_version >= (11,0,0):\n"],
     ['"cudnn_graph.h"', '"libcudnn_graph.so"', '"libcudnn_engines_precompiled.so"',
      '"libcudnn_engines_runtime_compiled.so"', '"libcudnn_heuristic.so"', '"libcudnn_ops.so"', '"libcudnn_cnn.so"',
      '"libcudnn_adv.so"', 'l, ("9",))', 'if lib_name == "cudnn" and "rnn" in fname and globals().get("cudnn_v9"):',
      "            elif nvcc_version >= (11,0,0):\n"]),
    ("cudnn9", "jittor/nn.py", [], ["and hasattr(jt.cudnn, 'cudnn_rnn_weight_offset')"]),
] + [("fp32-accum", rel, ["CUDNN_CROSS_CORRELATION, getDataType<Ty>()"],
      ["cudnnDataType_t compute_type = getDataType<Ty>() == CUDNN_DATA_HALF ? CUDNN_DATA_FLOAT : getDataType<Ty>();",
       "CUDNN_CROSS_CORRELATION, compute_type"]) for rel in FILES["fp32-accum"]])
def test_each_change_is_in_its_patch(copy_tree, name, rel, before, after):
    old = read(copy_tree, rel)
    for text in before:
        assert text in old
    for text in after:
        assert text not in old
    for other in ALL:  # the other patches leave these lines alone
        if other != name:
            tool.apply(str(copy_tree), [other], copy=True)
            assert all(text in read(copy_tree, rel) for text in before)
            assert not any(text in read(copy_tree, rel) for text in after)
    tool.apply(str(copy_tree), [name], copy=True)
    new = read(copy_tree, rel)
    for text in before:
        assert text not in new, f"{rel} still has {text!r}"
    for text in after:
        assert text in new, f"{rel} lacks {text!r}"
    assert f"ccnet {name} patch" in new
    if rel == "jittor/nn.py":
        assert new.count("hasattr(jt.cudnn, 'cudnn_rnn_weight_offset')") == 2
    if rel == "jittor/compiler.py":  # the c++17 comes after Jittor's own -std=c++14 conversion, so it wins
        conv = new[new.index("def convert_nvcc_flags"):]
        assert conv.index('"-std=c++17", "-std=c++14') < conv.index('nvcc_flags += " -std=c++17 "')


def test_patched_python_files_compile(copy_tree):
    tool.apply(str(copy_tree), ALL, copy=True)
    for rel in TARGETS:
        if rel.endswith(".py"):
            py_compile.compile(str(copy_tree / rel), doraise=True, cfile=str(copy_tree / (rel + "c")))


# --------------------------------------------------------------------------- what the patched Python does

def _block(src: str, start: str, end: str) -> str:
    """The lines of ``src`` from the one that starts with ``start`` up to ``end``, dedented."""
    begin = src.index("\n" + start) + 1
    return textwrap.dedent(src[begin:src.index(end, begin)])


def test_optional_cuda_libs_switch(copy_tree):
    """nvcc13's compile_extern change: a library named in $jt_optional_cuda_libs warns instead of aborting."""
    tool.apply(str(copy_tree), ["nvcc13"], copy=True)
    code = _block(read(copy_tree, "jittor/compile_extern.py"), "            # ccnet nvcc13 patch: the libraries",
                  "def setup_cuda_lib")
    calls = []
    env = {"os": os, "LOG": type("L", (), {"w": staticmethod(lambda m: calls.append("w")),
                                           "f": staticmethod(lambda m: calls.append("f"))}), "msg": "m"}
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


@pytest.mark.parametrize("nvcc_version, v9, want", [
    ((12, 4, 131), True, ["libcudnn_graph.so", "libcudnn_engines_precompiled.so",
                          "libcudnn_engines_runtime_compiled.so", "libcudnn_heuristic.so", "libcudnn_ops.so",
                          "libcudnn_cnn.so", "libcudnn_adv.so"]),
    ((12, 4, 131), False, ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", "libcudnn_cnn_infer.so",
                           "libcudnn_cnn_train.so"]),
    ((11, 8, 89), False, ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", "libcudnn_cnn_infer.so",
                          "libcudnn_cnn_train.so"]),
    ((10, 2, 89), False, []),
])
def test_cudnn9_loads_the_libraries_of_the_cudnn_it_compiles_against(copy_tree, tmp_path, pristine_tree,
                                                                     nvcc_version, v9, want):
    """cudnn9's compile_extern block run with a fake search: cuDNN 9's seven libraries (soname 9) when
    cudnn_graph.h sits next to the cudnn.h found, else exactly what stock Jittor preloads (any CUDA version)."""
    tool.apply(str(copy_tree), ["cudnn9"], copy=True)
    include = tmp_path / "include"
    include.mkdir()
    (include / "cudnn.h").write_text("")
    if v9:
        (include / "cudnn_graph.h").write_text("")

    def run(tree):
        loaded = []
        code = _block(read(tree, "jittor/compile_extern.py"),
                      '        if lib_name == "cudnn":\n            # cudnn cannot',
                      "        # dynamic link cuda library")
        env = {"os": os, "lib_name": "cudnn", "nvcc_version": nvcc_version,
               "cuda_include_name": str(include / "cudnn.h"), "cuda_bin": "b", "cuda_lib": "l", "extra_lib_path": "e",
               "arch_key": "x86_64", "dlopen_flags": 0,
               "prefer_version": ("8",) if nvcc_version[0] == 11 else (),
               "search_file": lambda dirs, name, prefer=(): loaded.append((name, tuple(prefer))) or name,
               "ctypes": type("C", (), {"CDLL": staticmethod(lambda path, flags: None)})}
        exec(code, env)
        return loaded, env.get("cudnn_v9")

    loaded, flag = run(copy_tree)
    assert [name for name, _ in loaded] == want and flag is v9
    if v9:
        assert all(prefer == ("9",) for _, prefer in loaded)
    else:  # without cuDNN 9 the patched block does what stock Jittor does
        assert loaded == run(pristine_tree)[0]


def test_cudnn9_leaves_out_the_rnn_sources_only_for_cudnn9(copy_tree):
    tool.apply(str(copy_tree), ["cudnn9"], copy=True)
    code = _block(read(copy_tree, "jittor/compile_extern.py"), "    culib_src_files = []\n",
                  "    if len(culib_src_files) == 0:")
    folder = copy_tree / "jittor" / "extern" / "cuda" / "cudnn"
    every = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    rnn = [p for p in every if "rnn" in os.path.basename(p)]
    assert len(rnn) >= 6  # the RNN ops, their headers, the descriptor
    for lib, v9, missing in (("cudnn", True, rnn), ("cudnn", False, []), ("cublas", True, [])):
        env = {"os": os, "lib_name": lib, "culib_src_dir": str(folder), "cudnn_v9": v9}
        exec(code, env)
        assert sorted(env["culib_src_files"]) == sorted(set(every) - set(missing)), (lib, v9)


# --------------------------------------------------------------------------- refusals and failures

def test_failed_trial_writes_nothing(copy_tree):
    # a Jittor changed by hand where one hunk of cudnn9 has its context: nothing at all may be written,
    # not even the files of nvcc13, which would apply
    path = copy_tree / "jittor" / "nn.py"
    path.write_text(path.read_text().replace("        if jt.flags.use_cuda and jt.cudnn and jt.compiler.is_cuda:",
                                             "        if jt.flags.use_cuda and jt.cudnn and jt.compiler.is_cuda:  # x"))
    before = digests(copy_tree)
    with pytest.raises(tool.PatchError, match="cudnn9.patch does not apply"):
        tool.apply(str(copy_tree), ["nvcc13", "cudnn9"], copy=True)
    assert digests(copy_tree) == before
    assert not list((copy_tree / "jittor").glob(".ccnet_patch_*"))
    assert tool.status(str(copy_tree), "cudnn9") == "neither" and tool.status(str(copy_tree), "nvcc13") == "unpatched"
    assert tool.apply(str(copy_tree), ["nvcc13"], copy=True) == {"nvcc13": "applied"}  # alone it is fine


@pytest.mark.parametrize("name", ALL)
def test_partly_patched_tree_is_an_error(copy_tree, pristine_tree, name):
    tool.apply(str(copy_tree), ALL, copy=True)
    rel = FILES[name][-1]
    shutil.copy(pristine_tree / rel, copy_tree / rel)  # one file of this patch back
    before = digests(copy_tree)
    assert tool.status(str(copy_tree), name) == "neither"
    with pytest.raises(tool.PatchError, match=re.escape(f"{name}.patch")):
        tool.apply(str(copy_tree), [name], copy=True)
    assert digests(copy_tree) == before
    for other in ALL:
        if other != name and rel not in FILES[other]:
            assert tool.apply(str(copy_tree), [other], copy=True) == {other: "already"}


def test_wrong_version_is_refused(copy_tree):
    init = copy_tree / "jittor" / "__init__.py"
    init.write_text(init.read_text().replace("__version__ = '1.3.11.0'", "__version__ = '1.3.10.0'"))
    before = digests(copy_tree)
    with pytest.raises(tool.RefusedError, match=r"Jittor 1\.3\.10\.0.*1\.3\.11 only"):
        tool.apply(str(copy_tree), ["nvcc13"], copy=True)
    assert digests(copy_tree) == before
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--copy", "--patches", "nvcc13"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "refused" in proc.stderr and "1.3.11" in proc.stderr
    assert digests(copy_tree) == before


def test_unknown_patch_is_refused(copy_tree):
    with pytest.raises(tool.RefusedError, match="unknown patch cuda14"):
        tool.apply(str(copy_tree), ["nvcc13", "cuda14"], copy=True)
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--copy", "--with", "fp32accum"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown patch fp32accum" in proc.stderr and "fp32-accum" in proc.stderr
    assert tool.status(str(copy_tree), "fp32-accum") == "unpatched"


def test_jittor_outside_the_project_is_refused(copy_tree, tmp_path):
    before = digests(copy_tree)
    with pytest.raises(tool.RefusedError, match="never changes a Jittor the user installed"):
        tool.apply(str(copy_tree), ["nvcc13"])  # not marked as a copy, not in a project venv
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--patches", "nvcc13"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--copy-to" in proc.stderr
    # a site-packages is never a "copy", even when called one
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(copy_tree, site)
    with pytest.raises(tool.RefusedError, match="site-packages"):
        tool.apply(str(site), ["nvcc13"], copy=True)
    assert digests(copy_tree) == before == digests(site)


def test_a_venv_inside_the_project_is_patched(pristine_tree, tmp_path):
    project = tmp_path / "project"
    venv = project / ".venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    shutil.copytree(pristine_tree, site)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert tool.apply(str(venv), ["cudnn9"], project_root=str(project)) == {"cudnn9": "applied"}
    assert tool.apply(str(venv), ["nvcc13", "cudnn9"], project_root=str(project)) == \
        {"nvcc13": "applied", "cudnn9": "already"}
    # the same tree seen from another project is not "ours"
    with pytest.raises(tool.RefusedError):
        tool.apply(str(venv), ["nvcc13"], project_root=str(tmp_path / "elsewhere"))


def test_dry_run_writes_nothing(copy_tree):
    tool.apply(str(copy_tree), ["cudnn9"], copy=True)
    before = digests(copy_tree)
    assert tool.apply(str(copy_tree), ALL, copy=True, dry_run=True) == \
        {"nvcc13": "would apply", "cudnn9": "already", "fp32-accum": "would apply"}
    assert digests(copy_tree) == before
    assert not (copy_tree / "jittor" / tool.MARKER.format("nvcc13")).exists()


def test_cli_copy_to_leaves_the_source_alone(copy_tree, tmp_path):
    before = digests(copy_tree)
    out = tmp_path / "patched"
    proc = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(copy_tree), "--copy-to", str(out),
                           "--patches", "cudnn9", "--with", "fp32-accum"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "cudnn9 applied, fp32-accum applied" in proc.stdout and f"PYTHONPATH={out}" in proc.stdout
    assert digests(copy_tree) == before
    assert [tool.status(str(out), n) for n in ALL] == ["unpatched", "patched", "patched"]
    assert (out / "jittor_utils" / "__init__.py").exists() and not list(out.rglob("__pycache__"))
    again = subprocess.run([sys.executable, TOOL, "--jittor-dir", str(out), "--copy", "--patches", "cudnn9,fp32-accum"],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "cudnn9 already (in place before), fp32-accum already" in again.stdout


# --------------------------------------------------------------------------- nvcc, cuDNN and the route

FAKE_NVCC = {
    (11, 8): "Cuda compilation tools, release 11.8, V11.8.89\nBuild cuda_11.8.r11.8/compiler.31833905_0",
    (12, 4): "Cuda compilation tools, release 12.4, V12.4.131\nBuild cuda_12.4.r12.4/compiler.34097967_0",
    (13, 0): "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0",
}
CUDNN_VERSIONS = {8: (8, 9, 7), 9: (9, 1, 0)}


def fake_nvcc(folder, text) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "nvcc")
    with open(path, "w") as f:
        f.write("#!/bin/sh\ncat <<'EOF'\nnvcc: NVIDIA (R) Cuda compiler driver\n"
                f"Copyright (c) 2005-2025 NVIDIA Corporation\n{text}\nEOF\n")
    os.chmod(path, 0o755)
    return path


def fake_cudnn(include, lib, major, with_link=True):
    """cuDNN's headers and library as a package lays them out (empty files; versions in cudnn_version.h)."""
    os.makedirs(include, exist_ok=True)
    os.makedirs(lib, exist_ok=True)
    v = CUDNN_VERSIONS[major]
    with open(os.path.join(include, "cudnn.h"), "w") as f:
        f.write('#include "cudnn_version.h"\n')
    with open(os.path.join(include, "cudnn_version.h"), "w") as f:
        f.write(f"#define CUDNN_MAJOR {v[0]}\n#define CUDNN_MINOR {v[1]}\n#define CUDNN_PATCHLEVEL {v[2]}\n"
                "#define CUDNN_VERSION (CUDNN_MAJOR * 10000 + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)\n")
    if major >= 9:
        open(os.path.join(include, "cudnn_graph.h"), "w").close()
    real = os.path.join(lib, "libcudnn.so.{}.{}.{}".format(*v))
    open(real, "w").close()
    os.symlink(os.path.basename(real), os.path.join(lib, f"libcudnn.so.{major}"))
    if with_link:
        os.symlink(f"libcudnn.so.{major}", os.path.join(lib, "libcudnn.so"))


def fake_cuda(tmp_path, nvcc, cudnn):
    cuda = tmp_path / "cuda"
    path = fake_nvcc(str(cuda / "bin"), FAKE_NVCC[nvcc])
    (cuda / "include").mkdir(parents=True, exist_ok=True)
    (cuda / "include" / "cuda_runtime.h").write_text("")
    if cudnn:
        fake_cudnn(str(cuda / "include"), str(cuda / "lib64"), cudnn)
    return path


#: Written out by hand: (nvcc, cuDNN major) -> the patches Jittor needs.
ROUTE_TABLE = {
    ((11, 8), 8): (), ((11, 8), 9): ("cudnn9",), ((11, 8), None): (),
    ((12, 4), 8): (), ((12, 4), 9): ("cudnn9",), ((12, 4), None): (),
    ((13, 0), 8): ("nvcc13",), ((13, 0), 9): ("nvcc13", "cudnn9"), ((13, 0), None): ("nvcc13",),
}


@pytest.mark.parametrize("nvcc, cudnn", list(ROUTE_TABLE))
def test_route_table(tmp_path, nvcc, cudnn):
    path = fake_cuda(tmp_path, nvcc, cudnn)
    version = tool.nvcc_version(path)
    assert version[:2] == nvcc and len(version) == 3
    headers, libraries = tool.cudnn_search_dirs(path, root=str(tmp_path / "system"))
    info = tool.find_cudnn(headers, libraries, nvcc_major=version[0])
    assert info.major == cudnn
    if cudnn:
        assert info.version == ".".join(map(str, CUDNN_VERSIONS[cudnn]))
        assert info.header == str(tmp_path / "cuda" / "include" / "cudnn.h")
        assert info.library == str(tmp_path / "cuda" / "lib64" / "libcudnn.so.{}.{}.{}".format(*CUDNN_VERSIONS[cudnn]))
        assert info.note == ""
    else:
        assert info == (None, None, None, None, "")
    assert tool.route(version, info.major) == ROUTE_TABLE[(nvcc, cudnn)]
    assert tool.route(version, info.major, gpu=False) == "cpu"


def test_route_without_nvcc(tmp_path):
    assert tool.nvcc_version(str(tmp_path / "missing" / "nvcc")) is None
    assert tool.nvcc_version(None) is None
    assert tool.route(None, 9) == "cpu"
    assert tool.nvcc_version(fake_nvcc(str(tmp_path), "no version here")) is None
    assert tool.route((14, 1), 10) == ("nvcc13", "cudnn9")
    assert tool.route((12, 2), 7) == ()
    assert tool.nvcc_version(fake_nvcc(str(tmp_path), "Cuda compilation tools, release 12.2")) == (12, 2)


def test_cudnn_is_searched_where_jittor_searches(tmp_path):
    """The folders of compile_extern.setup_cuda_lib, in its order: the nvcc's CUDA folder (links resolved),
    its targets/<arch>-linux, then the system's."""
    arch = tool._arch()
    real = fake_nvcc(str(tmp_path / "cuda-12.4" / "bin"), FAKE_NVCC[(12, 4)])
    (tmp_path / "links").mkdir()
    os.symlink(real, tmp_path / "links" / "nvcc")
    system = tmp_path / "system"
    headers, libraries = tool.cudnn_search_dirs(str(tmp_path / "links" / "nvcc"), root=str(system))
    cuda = tmp_path / "cuda-12.4"
    assert headers == [str(cuda / "include"), str(cuda / "targets" / f"{arch}-linux" / "include"),
                       str(system / "usr" / "include")]
    assert libraries == [str(cuda / "bin"), str(cuda / "lib64"), str(cuda / "targets" / f"{arch}-linux" / "lib"),
                         str(system / "usr" / "lib" / f"{arch}-linux-gnu"), str(system / "usr" / "lib")]
    assert tool.cudnn_search_dirs("/usr/bin/nvcc", root="/")[1][1] == f"/usr/lib/{arch}-linux-gnu"
    # a system cuDNN 8 (Debian's layout) is found when the CUDA folder has none, the CUDA folder's first
    fake_cudnn(str(system / "usr" / "include"), str(system / "usr" / "lib" / f"{arch}-linux-gnu"), 8)
    assert tool.find_cudnn(headers, libraries, 12).major == 8
    fake_cudnn(str(cuda / "targets" / f"{arch}-linux" / "include"), str(cuda / "targets" / f"{arch}-linux" / "lib"), 9)
    info = tool.find_cudnn(headers, libraries, 12)
    assert info.major == 9 and info.header.startswith(str(cuda)) and info.library.startswith(str(cuda))


def test_cudnn_of_a_merged_pip_tree_and_odd_layouts(tmp_path):
    """scripts/jittor_cuda13_env.sh's tree: a regular-file nvcc, links into the pip packages. Then: only a
    versioned library; header and library of different majors; nvcc 11 prefers libcudnn.so.8."""
    pip = tmp_path / "site-packages" / "nvidia" / "cudnn"
    fake_cudnn(str(pip / "include"), str(pip / "lib"), 9, with_link=False)
    tree = tmp_path / "tree"
    nvcc = fake_nvcc(str(tree / "bin"), FAKE_NVCC[(13, 0)])
    for sub, names in (("include", ["cudnn.h", "cudnn_version.h", "cudnn_graph.h"]), ("lib64", ["libcudnn.so.9"])):
        (tree / sub).mkdir()
        for name in names:
            os.symlink(pip / ("include" if sub == "include" else "lib") / name, tree / sub / name)
    dirs = tool.cudnn_search_dirs(nvcc, root=str(tmp_path / "system"))
    info = tool.find_cudnn(*dirs, nvcc_major=13)
    assert info.major == 9 and info.version == "9.1.0"
    assert os.path.realpath(info.header) == str(pip / "include" / "cudnn.h")
    assert "only libcudnn.so.9 is there" in info.note  # Jittor links libcudnn.so: not there yet
    os.symlink("libcudnn.so.9", tree / "lib64" / "libcudnn.so")  # what the env script adds
    info = tool.find_cudnn(*dirs, nvcc_major=13)
    assert info.note == "" and info.library == str(pip / "lib" / "libcudnn.so.9.1.0")
    assert tool.route((13, 0), info.major) == ("nvcc13", "cudnn9")
    # header 8, library 9: the header decides (it is what Jittor compiles against), and the mismatch is said
    (tree / "include" / "cudnn_version.h").unlink()
    (tree / "include" / "cudnn_version.h").write_text("#define CUDNN_MAJOR 8\n#define CUDNN_MINOR 9\n")
    info = tool.find_cudnn(*dirs, nvcc_major=13)
    assert info.major == 8 and "the header is cuDNN 8.9 but the library is cuDNN 9" in info.note
    # nvcc 11: libcudnn.so.8 before libcudnn.so in each folder, as Jittor prefers
    lib = tmp_path / "l"
    fake_cudnn(str(tmp_path / "i"), str(lib), 9)
    open(lib / "libcudnn.so.8", "w").close()
    assert tool.find_cudnn([str(tmp_path / "i")], [str(lib)], 11).library == str(lib / "libcudnn.so.8")
    assert tool.find_cudnn([str(tmp_path / "i")], [str(lib)], 12).library == str(lib / "libcudnn.so.9.1.0")
    # only a library: its soname gives the major
    assert tool.find_cudnn([], [str(lib)], 12).major == 9


def test_cli_check_reports_nvcc_cudnn_and_route(tmp_path, copy_tree):
    nvcc = fake_cuda(tmp_path, (12, 4), 9)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    before = digests(copy_tree)
    proc = subprocess.run([sys.executable, TOOL, "--nvcc", nvcc, "--check", "--jittor-dir", str(copy_tree)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "version 12.4.131" in out and "route: cpu (no NVIDIA GPU visible)" in out
    assert f"cuDNN 9.1.0 (header {tmp_path}/cuda/include/cudnn.h; library {tmp_path}/cuda/lib64/libcudnn.so.9.1.0)" \
        in out
    assert "nvcc13 unpatched, cudnn9 unpatched, fp32-accum unpatched" in out and "would apply: nothing" in out
    proc = subprocess.run([sys.executable, TOOL, "--nvcc", nvcc, "--check", "--jittor-dir", str(copy_tree),
                           "--with", "fp32-accum"], capture_output=True, text=True, env=env)
    assert "would apply: fp32-accum" in proc.stdout
    assert digests(copy_tree) == before  # --check writes nothing
    proc = subprocess.run([sys.executable, TOOL, "--nvcc", nvcc, "--jittor-dir", str(copy_tree), "--copy"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "nothing to do (no NVIDIA GPU visible" in proc.stdout
    env["nvcc_path"] = ""  # Jittor's "no CUDA" setting: no nvcc at all
    proc = subprocess.run([sys.executable, TOOL, "--check"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "(not found)" in proc.stdout and "route: cpu (no nvcc)" in proc.stdout
    assert "cuDNN not looked for (no nvcc)" in proc.stdout


def test_nvcc_is_found_in_jittors_order(tmp_path, monkeypatch):
    first = fake_nvcc(str(tmp_path / "a"), FAKE_NVCC[(12, 4)])
    fake_nvcc(str(tmp_path / "b"), FAKE_NVCC[(13, 0)])
    monkeypatch.delenv("nvcc_path", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}:/usr/bin:/bin")
    assert tool.find_nvcc() == first  # PATH before /usr/local/cuda, as compiler.py does
    monkeypatch.setenv("nvcc_path", str(tmp_path / "b" / "nvcc"))
    assert tool.find_nvcc() == str(tmp_path / "b" / "nvcc")
    monkeypatch.setenv("nvcc_path", "")
    assert tool.find_nvcc() is None


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

def _nvcc(tmp_path, name, source, *flags, out=None):
    if not os.path.isfile(NVCC):
        pytest.skip(f"{NVCC} is not installed")
    path = tmp_path / name
    path.write_text(source)
    output = out or str(tmp_path / (name + ".o"))
    return subprocess.run([NVCC, *flags, *(["-c"] if out is None else []), str(path), "-o", output],
                          capture_output=True, text=True, timeout=300)


def _nvcc_major():
    v = tool.nvcc_version(NVCC) if os.path.isfile(NVCC) else None
    if not v or v[0] < 13:
        pytest.skip("needs nvcc 13 at /usr/local/cuda")


def test_helper_cuda_h_compiles_with_nvcc13_only_when_patched(copy_tree, pristine_tree, tmp_path):
    _nvcc_major()
    src = "#include <cuda_runtime.h>\n#include <helper_cuda.h>\nint probe() { return _ConvertSMVer2Cores(9, 0); }\n"
    tool.apply(str(copy_tree), ["nvcc13"], copy=True)
    for tree, ok in ((pristine_tree, False), (copy_tree, True)):
        j = tree / "jittor"
        proc = _nvcc(tmp_path, "helper.cu", src, "-std=c++17", f"-I{j}/extern/cuda/inc", f"-I{j}/src")
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        if not ok:
            assert "computeMode" in proc.stdout + proc.stderr or "clockRate" in proc.stdout + proc.stderr


def _cccl_probe(tree) -> str:
    """One CUDA file made of the code lines nvcc13 changes (where op, softmax, depthwise), taken from the tree."""
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
    """The code of nvcc13's changes to cub_where_op.cc, code_softmax.py and depthwise_conv.py as nvcc 13
    sees it, and the reason for its compiler.py change: CCCL 3 needs C++17."""
    _nvcc_major()
    tool.apply(str(copy_tree), ["nvcc13"], copy=True)
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


#: What the compute-type probe needs of cuDNN, declared as cuDNN 7-9 do (cudnn.h / cudnn_graph.h values):
#: no cudnn.h exists on this machine, so the test compiles against this instead.
CUDNN_DECLARATIONS = """
typedef enum { CUDNN_STATUS_SUCCESS = 0 } cudnnStatus_t;
typedef enum { CUDNN_DATA_FLOAT = 0, CUDNN_DATA_DOUBLE = 1, CUDNN_DATA_HALF = 2, CUDNN_DATA_INT8 = 3,
               CUDNN_DATA_INT32 = 4, CUDNN_DATA_INT8x4 = 5, CUDNN_DATA_UINT8 = 6, CUDNN_DATA_UINT8x4 = 7,
               CUDNN_DATA_INT8x32 = 8, CUDNN_DATA_BFLOAT16 = 9 } cudnnDataType_t;
typedef enum { CUDNN_CONVOLUTION = 0, CUDNN_CROSS_CORRELATION = 1 } cudnnConvolutionMode_t;
typedef struct cudnnConvolutionStruct *cudnnConvolutionDescriptor_t;
cudnnStatus_t cudnnSetConvolutionNdDescriptor(cudnnConvolutionDescriptor_t convDesc, int arrayLength,
    const int padA[], const int filterStrideA[], const int dilationA[], cudnnConvolutionMode_t mode,
    cudnnDataType_t computeType);
"""


def _compute_type_probe(tree) -> str:
    """A host program: each op's descriptor call (and, patched, its compute-type line) taken from ``tree``,
    run for float16, float32, float64 and bfloat16 data, printing the compute type cuDNN would be given."""
    wrapper = read(tree, "jittor/extern/cuda/cudnn/inc/cudnn_wrapper.h")
    data_types = "\n".join(line for line in wrapper.splitlines() if "getDataType" in line)
    probes, calls = [], []
    for n, rel in enumerate(FILES["fp32-accum"]):
        src = read(tree, rel)
        call = re.search(r"((?:    // float16 data.*\n    cudnnDataType_t compute_type = .*\n)?"
                         r"    checkCudaErrors\(cudnnSetConvolutionNdDescriptor\(.*?\n    \)\);)", src, re.S).group(1)
        probes.append(f"template <typename Ty> int probe{n}() {{\n    cudnnConvolutionDescriptor_t cudnnConvDesc = 0;\n"
                      "    int padA[3] = {0, 0, 0}, convstrideA[3] = {1, 1, 1}, dilationA[3] = {1, 1, 1};\n"
                      f"{call}\n    return recorded;\n}}\n")
        calls.append(f'    printf("{os.path.basename(rel)} %d %d %d %d\\n", probe{n}<half1>(), probe{n}<float>(), '
                     f"probe{n}<double>(), probe{n}<__nv_bfloat16>());")
    return f"""#include <cstdio>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "cudnn_min.h"
typedef __half half1;
{data_types}
template <> inline cudnnDataType_t getDataType<double>() {{ return CUDNN_DATA_DOUBLE; }}
static cudnnDataType_t recorded;
cudnnStatus_t cudnnSetConvolutionNdDescriptor(cudnnConvolutionDescriptor_t, int, const int*, const int*, const int*,
                                              cudnnConvolutionMode_t, cudnnDataType_t computeType) {{
    recorded = computeType;
    return CUDNN_STATUS_SUCCESS;
}}
#define checkCudaErrors(call) (call)
{"".join(probes)}
int main() {{
{chr(10).join(calls)}
    return 0;
}}
"""


def test_fp32_accum_sets_float_compute_for_half_and_compiles_with_nvcc13(copy_tree, pristine_tree, tmp_path):
    """fp32-accum's six changes, compiled by nvcc 13 (against CUDNN_DECLARATIONS: no cudnn.h here) and run on
    the host: the compute type given to cuDNN is FLOAT for half data, and unchanged for every other type."""
    _nvcc_major()
    (tmp_path / "cudnn_min.h").write_text(CUDNN_DECLARATIONS)
    tool.apply(str(copy_tree), ["fp32-accum"], copy=True)
    ops = [os.path.basename(rel) for rel in FILES["fp32-accum"]]
    half, flt, dbl, bf16 = 2, 0, 1, 9
    for tree, want_half in ((pristine_tree, half), (copy_tree, flt)):
        exe = str(tmp_path / f"probe_{want_half}")
        proc = _nvcc(tmp_path, f"probe_{want_half}.cu", _compute_type_probe(tree), "-std=c++17", f"-I{tmp_path}",
                     out=exe)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        got = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in run.stdout.splitlines()}
        assert got == {op: [want_half, flt, dbl, bf16] for op in ops}, run.stdout


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
    (dnn / "include" / "cudnn_version.h").write_text("#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 10\n")
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
    # the tool finds the pip cuDNN through the tree, where Jittor will
    info = tool.find_cudnn(*tool.cudnn_search_dirs(exports["nvcc_path"], root=str(tmp_path / "system")), 13)
    assert info.major == 9 and info.version == "9.10" and info.note == ""
    assert os.path.realpath(info.header) == str(sp / "nvidia" / "cudnn" / "include" / "cudnn.h")
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
