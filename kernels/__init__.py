"""mochapy's hand-written CUDA kernels (one concern per `.cu` file, shared helpers in `.cuh`).

Installed as the package `mochapy.kernels`; mochapy.backends.plan lists the template
kernels each file provides, and mochapy.backends.gpu_kernels compiles them with NVRTC (through
cupy.RawModule) for float and double on first use.
"""
