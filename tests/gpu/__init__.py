"""The GPU backend and kernels/, on a device or on the CUDA emulation in cuda_emu/."""
