"""Build fused_lstm's C++ extension, with its CUDA part when torch and the toolkit have CUDA.

Always build without isolation so the extension compiles against the torch it runs with:
    pip install --no-build-isolation -e .
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def extension():
    # No -march=native: a wheel built here must run on any x86-64 (the per-ISA kernels in
    # csrc/cpu/isa pick their instruction set themselves).
    cxx = ["-O3", "-fopenmp"]
    cpu = [s for s in sources("csrc/**/*.cpp") if os.sep + "cuda" + os.sep not in s]
    with_cuda = CUDA_HOME is not None and torch.version.cuda is not None
    if not with_cuda:
        return CppExtension("fused_lstm._C", cpu, extra_compile_args={"cxx": cxx},
                            extra_link_args=["-fopenmp"], py_limited_api=False)
    return CUDAExtension(
        "fused_lstm._C",
        cpu + sources("csrc/cuda/*.cpp") + sources("csrc/cuda/*.cu"),
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )


setup(
    name="fused_lstm",
    version="0.1.0",
    description="A fused LSTM for PyTorch: a drop-in for torch.nn.LSTM",
    packages=find_packages(include=["fused_lstm", "fused_lstm.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
)
