"""Same params, seed and thread count: the same weights file, byte for byte; the CPU code paths pinned
(portable) or chosen by the machine (native), and recorded. Other CPUs: tests/cpus."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.outputs import save_torch
from mnistcnn.params import config
from mnistcnn.training import engine, kernels, reproducible
from tests.conftest import KERNEL_VARIABLES, ROOT, committed_params, synthetic_split

TRAIN = config.load(committed_params()).train.model_copy(update=dict(model="cnn9k", batch_size=32, lr=0.01,
                                                                   epochs=2, device="cpu", threads=1))


def weights_file(tmp_path, train_params, name) -> bytes:
    """Train as the train stage does, on tiny synthetic data, and return the saved weights file."""
    reproducible.configure(train_params.threads)
    reproducible.seed_everything(train_params.seed)
    images, labels = synthetic_split(96, seed=1)
    model = models.build(train_params.architecture, train_params.dropout)
    engine.fit(model, train_params, mnist.normalize(images), labels.long(), on_epoch=lambda row, seconds: None)
    save_torch(model.state_dict(), tmp_path / name)
    return (tmp_path / name).read_bytes()


@pytest.fixture(autouse=True)
def restore_torch_settings():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True


def test_the_same_params_give_the_same_weights_file_and_another_seed_does_not(tmp_path):
    first = weights_file(tmp_path, TRAIN, "first.pt")
    assert weights_file(tmp_path, TRAIN, "again.pt") == first
    assert weights_file(tmp_path, TRAIN.model_copy(update={"seed": TRAIN.seed + 1}), "other.pt") != first


def test_configure_sets_the_thread_count_params_name_and_zero_keeps_the_default():
    default = torch.get_num_threads()
    assert reproducible.configure(1) == 1 == torch.get_num_threads()
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert not torch.utils.deterministic.fill_uninitialized_memory  # its cost bought nothing here
    torch.set_num_threads(default)
    assert reproducible.configure(0) == default


def test_configure_does_not_import_the_compiler():
    # torch.use_deterministic_algorithms imports Inductor (0.8 s of each stage's start-up); configure must not
    check = ("import sys, torch\nfrom mnistcnn.training import reproducible\nreproducible.configure(1)\n"
             "assert torch.are_deterministic_algorithms_enabled()\n"
             "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
             "print(sorted(m for m in sys.modules if m.startswith(('torch._inductor', 'torch._dynamo'))))\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ops_without_a_deterministic_kernel_are_named_and_the_run_not_called_deterministic():
    reproducible.configure(1)
    with pytest.warns(UserWarning, match="unrelated"):  # other warnings still reach the user
        with reproducible.nondeterministic_kernels() as kernels:
            target = torch.zeros(4)
            target.put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))  # no deterministic CPU kernel
            warnings.warn("unrelated", UserWarning)
    assert kernels == {"put_"}
    assert reproducible.determinism(kernels) == {"env.deterministic": "false", "env.nondeterministic_kernels": "put_"}
    with reproducible.nondeterministic_kernels() as none:
        torch.ones(3).sum()
    assert reproducible.determinism(none) == {"env.deterministic": "true", "env.nondeterministic_kernels": "none"}


def test_the_environment_names_what_a_result_depends_on():
    env = reproducible.environment(torch.device("cpu"), threads=1)
    assert env["env.torch"] == torch.__version__ and env["env.threads"] == str(torch.get_num_threads())
    assert env["env.device"] == "cpu" and env["env.device_name"] and env["env.cpu_capability"] == "AVX2"
    assert env["env.memory_format"] == "channels_last" and env["env.libc"].startswith("glibc ")
    assert env["env.kernels"] == "portable" and env["env.machine_specific"] == "false"  # conftest pinned them
    assert reproducible.environment(torch.device("cpu"), threads=0)["env.machine_specific"] == "true"
    assert reproducible.machine_specific(torch.device("cuda"), threads=1)  # GPU kernels are the GPU's own


def test_the_params_digest_changes_with_any_value_and_only_then():
    assert config.digest(TRAIN) == config.digest(TRAIN.model_copy())
    assert len(config.digest(TRAIN)) == 64
    for change in ({"seed": 1}, {"threads": 2}, {"dropout": 0.3}, {"lr": 0.02}):
        assert config.digest(TRAIN.model_copy(update=change)) != config.digest(TRAIN)
    assert config.digest({"b": 1, "a": [1, None]}) == config.digest({"a": [1, None], "b": 1})


def test_configure_flushes_denormals_the_slow_path_of_cpu_arithmetic():
    try:
        reproducible.configure(0)
        assert torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert torch.tensor([1e-323], dtype=torch.float64).item() > 0.0


# The libraries' own account of the code they run: oneDNN's and MKL's verbose lines, torch's capability.
PROBE = textwrap.dedent("""
    import json, sys, torch
    from mnistcnn.training import kernels, reproducible
    if sys.argv[1] != "unconfigured":
        reproducible.configure(2, sys.argv[1])
    x = torch.randn(8, 1, 28, 28, requires_grad=True)
    torch.nn.functional.conv2d(x, torch.randn(4, 1, 3, 3)).sum().backward()
    torch.randn(64, 288) @ torch.randn(288, 10)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), **kernels.tags()}))
""")


def probe(mode: str, **env: str) -> dict:
    """Run PROBE in a fresh process from a user's environment plus `env`: what each library chose."""
    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    result = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                            env={**clean, "ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1", **env})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    isa = next(line.split("isa:")[1] for line in lines if ",info,cpu,isa:" in line)
    cnr = next(word for line in lines if line.startswith("MKL_VERBOSE SGEMM") for word in line.split()
               if word.startswith("CNR:"))
    return {**json.loads(lines[-1]), "onednn": isa, "mkl": cnr}


def test_portable_pins_all_three_libraries_and_native_leaves_them_as_unconfigured():
    portable = probe("portable")
    assert portable["capability"] == "AVX2" and portable["onednn"] == "Intel AVX2"
    assert portable["mkl"] == "CNR:COMPATIBLE" and portable["env.kernels"] == "portable"
    assert portable["env.kernel_pins"] == " ".join(f"{k}={v}" for k, v in sorted(kernels.PORTABLE.items()))
    native, unconfigured = probe("native"), probe("unconfigured")
    assert {k: native[k] for k in ("capability", "onednn", "mkl")} == \
           {k: unconfigured[k] for k in ("capability", "onednn", "mkl")}
    assert native["env.kernels"] == "native" and native["env.kernel_pins"] == "none"
    # a native stage started by a portable one (dvc under a pinned process) drops the inherited pins
    child = probe("native", **kernels.PORTABLE, MNISTCNN_KERNEL_PINS=" ".join(sorted(kernels.PORTABLE)))
    assert child["env.kernel_pins"] == "none" and child["capability"] == unconfigured["capability"]


def test_a_setting_of_the_user_wins_in_either_mode_and_is_recorded():
    portable = probe("portable", ATEN_CPU_CAPABILITY="default")
    assert portable["capability"] == "DEFAULT" and portable["onednn"] == "Intel AVX2"
    assert portable["env.kernel_pins_by_user"] == "ATEN_CPU_CAPABILITY"
    native = probe("native", MKL_CBWR="COMPATIBLE")
    assert native["mkl"] == "CNR:COMPATIBLE" and native["env.kernel_pins"] == "MKL_CBWR=COMPATIBLE"
    assert native["env.kernel_pins_by_user"] == "MKL_CBWR"


def test_pins_that_come_after_torch_chose_its_kernels_are_refused():
    late = textwrap.dedent("""
        import os, torch
        from mnistcnn.training import reproducible
        torch.ones(2) + 1  # torch picks its vector kernels here, at the pinned AVX2 level
        os.environ["ATEN_CPU_CAPABILITY"] = "default"
        reproducible.configure(1, "portable")
    """)
    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    result = subprocess.run([sys.executable, "-c", late], cwd=ROOT, capture_output=True, text=True,
                            env={**clean, "ATEN_CPU_CAPABILITY": "avx2"})
    assert result.returncode != 0 and "TooLate" in result.stderr
    assert "configure() must run before any tensor work" in result.stderr


def test_an_unknown_kernel_mode_is_refused():
    with pytest.raises(ValueError, match="portable, native"):
        kernels.select("fastest")
