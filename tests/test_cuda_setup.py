"""The CUDA side of a run, checked on the CPU: cuBLAS/cuDNN present, per-step CPU work off on CUDA."""
from types import SimpleNamespace

import pytest

import jittor as jt
from engine import launch
from utils import jittor_fixes
from utils.cuda_libraries import check_cuda_libraries, library_versions
from utils.errors import UserError


def test_missing_cudnn_is_one_error_naming_the_version_found(tmp_path):
    lib = tmp_path / "cuda" / "lib64"
    lib.mkdir(parents=True)
    for name in ("libcudnn.so.9", "libcudnn.so.9.1.0", "libcudnn.so.8.9.7", "libcudnn.so.bak"):
        (lib / name).write_bytes(b"")
    assert library_versions("cudnn", [str(lib)]) == [f"9.1.0 ({lib})", f"9 ({lib})", f"8.9.7 ({lib})"]
    extern = SimpleNamespace(cudnn=None, cublas=object(), cuda_lib=str(lib), cuda_bin=str(tmp_path / "cuda" / "bin"))
    with pytest.raises(UserError) as err:
        check_cuda_libraries(extern)
    text = str(err.value)
    assert text.startswith("CUDA is on but Jittor could not load cudnn (found libcudnn.so 9.1.0")
    assert "cublas" not in text.split(". Run")[0].split("cudnn (")[0]
    assert "scripts/jittor_cuda13.py" in text and "--verbose" in text and "--no-cuda" in text
    check_cuda_libraries(SimpleNamespace(cudnn=object(), cublas=object()))  # both loaded: no error
    with pytest.raises(UserError, match=r"could not load cublas \(no libcublas.so.\* in .*\): cuBLAS comes"):
        check_cuda_libraries(SimpleNamespace(cudnn=object(), cublas=None, cuda_lib=str(tmp_path / "none")))


def test_set_device_checks_the_libraries_before_using_cuda(monkeypatch):
    def refuse(extern=None):
        raise UserError("CUDA is on but Jittor could not load cudnn")
    monkeypatch.setattr(launch, "check_cuda_libraries", refuse)
    monkeypatch.setattr(jt, "has_cuda", 1)
    with pytest.raises(UserError, match="could not load cudnn"):
        launch.set_device()
    assert jt.flags.use_cuda == 0
    assert launch.set_device(no_cuda=True) == "cpu"  # --no-cuda: no check


def test_heap_trim_runs_on_the_cpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(jittor_fixes, "_MALLOC_TRIM", lambda pad: calls.append(pad))
    jittor_fixes.release_free_heap()
    assert calls == [0]
    monkeypatch.setattr(jittor_fixes, "jt", SimpleNamespace(flags=SimpleNamespace(use_cuda=1)))
    jittor_fixes.release_free_heap()
    assert calls == [0]
