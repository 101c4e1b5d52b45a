"""Our CUDA kernels as Python calls: compiled from kernels/*.cu on first use, launched on the
backend's stream. The layers, neurons and solvers call these through `backend.kernels`.

Kernels that keep state across launches (the Philox draw counter, Adam's step count) keep it in
small device buffers and advance it on the device, so a captured CUDA graph stays correct on
every replay. Host-side values the device needs (learning rate, momentum) are written into such a
buffer only when they change, always outside a capture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from mochapy.backends.interface import SolverStep
from mochapy.backends.plan import (
    BLOCK,
    COLUMN_TILE,
    COMPILE_OPTIONS,
    CTYPES,
    ELEMENTWISE_OPS,
    GEMM_THREADS,
    KERNELS,
    MAX_REDUCTION_BLOCKS,
    ROW_SLICES,
    SOLVER_METHODS,
    column_blocks,
    elementwise_blocks,
    expand_includes,
    gemm_plan,
    kernel_dir,
    name_expressions,
    reduction_blocks,
)


class SolverPlan:
    """The device-side numbers of one parameter buffer's update kernel.

    `hyper` = {lr, momentum, beta1, beta2, epsilon} and `step_state` = {finished updates t,
    blocks_done}: the kernel advances t itself, so a replayed CUDA graph applies the right bias
    correction. The host remembers what it last wrote (or that it does not know, after a capture)
    and writes t and the hyperparameters only when they differ from what the next update needs.
    """

    def __init__(self, cupy: Any, stream: Any) -> None:
        self.stream = stream
        self.hyper = cupy.zeros(5, dtype=np.float64)
        self.step_state = cupy.zeros(2, dtype=np.uint64)
        self._device_t: int | None = None
        self._device_hyper: tuple[float, ...] | None = None

    def sync(self, step: SolverStep) -> None:
        """Make the device ready for update number `step.t` (host writes, if any)."""
        hyper = (step.lr, step.momentum, step.beta1, step.beta2, step.epsilon)
        if hyper != self._device_hyper:
            self.hyper.set(np.asarray(hyper, dtype=np.float64), stream=self.stream)
            self._device_hyper = hyper
        if self._device_t != step.t - 1:
            self.step_state[:1].set(np.asarray([step.t - 1], dtype=np.uint64), stream=self.stream)
            self._device_t = step.t - 1

    def launched(self, step: SolverStep) -> None:
        """An update was queued: once it runs the device's t is `step.t`."""
        self._device_t = step.t

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Around a stream capture, which runs nothing: what the host knows of the device is what
        it knew before, whether the capture succeeds or fails. Sync before it, so that the update
        recorded inside finds nothing to write (a host copy there would invalidate the capture)."""
        known = (self._device_t, self._device_hyper)
        try:
            yield
        finally:
            self._device_t, self._device_hyper = known


class Workspace:
    """A scratch buffer that captured graphs point at: replaced when too small, never freed."""

    def __init__(self, cupy: Any, dtype: np.dtype) -> None:
        self.cupy = cupy
        self.dtype = dtype
        self.buffer: Any = None
        self.retired: list[Any] = []  # kept alive: a graph captured earlier may still use them

    def get(self, size: int) -> Any:
        if self.buffer is None or self.buffer.size < size:
            if self.buffer is not None:
                self.retired.append(self.buffer)
            self.buffer = self.cupy.empty(size, dtype=self.dtype)
        return self.buffer


class KernelLibrary:
    """interface.DeviceKernels: compiled kernels of one dtype and the Python calls that launch
    them."""

    def __init__(self, cupy: Any, dtype: np.dtype, stream: Any) -> None:
        self.cupy = cupy
        self.dtype = np.dtype(dtype)
        self.scalar = self.dtype.type
        self.stream = stream
        self.sm_count = int(cupy.cuda.Device().attributes["MultiProcessorCount"])
        self._folder = kernel_dir()
        self._modules: dict[str, Any] = {}
        self._functions: dict[str, Any] = {}
        self._partials = cupy.zeros(MAX_REDUCTION_BLOCKS, dtype=np.float64)
        self._blocks_done = cupy.zeros(1, dtype=np.uint64)
        self._gemm_workspace = Workspace(cupy, self.dtype)
        self._solver_plans: dict[tuple[int, int], SolverPlan] = {}

    # -- compilation and launch ------------------------------------------------------------------
    def module(self, file_name: str) -> Any:
        """One kernel file compiled by NVRTC (cached here, and by CuPy on disk)."""
        if file_name not in self._modules:
            self._modules[file_name] = self.cupy.RawModule(
                code=expand_includes(self._folder / file_name),
                options=COMPILE_OPTIONS,
                name_expressions=name_expressions(file_name, self.dtype.name),
            )
        return self._modules[file_name]

    def function(self, file_name: str, expression: str) -> Any:
        """One kernel, by its KERNELS template, e.g. ("gemm.cu", "gemm_sum_splits<{T}>")."""
        name = expression.format(T=CTYPES[self.dtype.name])
        if name not in self._functions:
            if expression not in KERNELS[file_name]:
                raise KeyError(f"{file_name} provides no kernel {expression!r}")
            self._functions[name] = self.module(file_name).get_function(name)
        return self._functions[name]

    def compile(self, file_name: str) -> None:
        """Compile and load every kernel of one file now: CuPy compiles at the first
        `get_function`, and loading a module inside a stream capture invalidates the capture."""
        for expression in KERNELS[file_name]:
            self.function(file_name, expression)

    def compile_all(self) -> None:
        """Compile every kernel file now, so that no compilation happens during a capture."""
        for file_name in KERNELS:
            self.compile(file_name)

    def _launch(
        self, file_name: str, expression: str, grid: tuple[int, ...], block: tuple[int, ...],
        args: tuple[Any, ...],
    ) -> None:
        self.function(file_name, expression)(grid, block, args, stream=self.stream)

    def _elementwise(self, file_name: str, expression: str, n: int, args: tuple[Any, ...]) -> None:
        self._launch(
            file_name, expression, (elementwise_blocks(n, self.sm_count),), (BLOCK,), args
        )

    def _reduce(self, file_name: str, expression: str, n: int, args: tuple[Any, ...]) -> None:
        """Launch a one-pass reduction kernel; its last two arguments are the shared workspace."""
        self._launch(
            file_name, expression, (reduction_blocks(n),), (BLOCK,),
            (*args, self._partials, self._blocks_done),
        )

    # -- neurons and InnerProduct ------------------------------------------------------------------
    def neuron_forward(self, code: int, parameter: float, offset: float, x: Any, y: Any) -> None:
        self._elementwise(
            "neurons.cu", "neuron_forward<{T}>", x.size,
            (np.int32(code), self.scalar(parameter), self.scalar(offset), x, y, np.int64(x.size)),
        )

    def neuron_backward(
        self, code: int, parameter: float, x: Any, y: Any, dy: Any, dx: Any
    ) -> None:
        self._elementwise(
            "neurons.cu", "neuron_backward<{T}>", x.size,
            (np.int32(code), self.scalar(parameter), x, y, dy, dx, np.int64(x.size)),
        )

    def bias_neuron_forward(self, neuron: Any, pre: Any, bias: Any, y: Any) -> None:
        """pre += bias (per column); y = neuron(pre)."""
        rows, cols = pre.shape
        self._elementwise(
            "bias.cu", "bias_neuron_forward<{T}>", pre.size,
            (np.int32(neuron.code), self.scalar(neuron.parameter), self.scalar(neuron.offset), pre,
             bias, y, np.int32(rows), np.int32(cols)),
        )

    def neuron_backward_column_sum(
        self, neuron: Any, pre: Any, y: Any, dy: Any, dpre: Any, bias_grad: Any
    ) -> None:
        """dpre = neuron'(pre) dy and bias_grad = column sums of dpre, in one pass."""
        rows, cols = pre.shape
        self._launch(
            "bias.cu", "neuron_backward_column_sum<{T}>", (column_blocks(cols),),
            (COLUMN_TILE, ROW_SLICES),
            (np.int32(neuron.code), self.scalar(neuron.parameter), pre, y, dy, dpre, bias_grad,
             np.int32(rows), np.int32(cols)),
        )

    # -- ElementWise and Power --------------------------------------------------------------------
    def elementwise_forward(self, operation: str, a: Any, b: Any, y: Any) -> None:
        self._elementwise(
            "elementwise.cu", "elementwise_forward<{T}>", y.size,
            (np.int32(ELEMENTWISE_OPS.index(operation)), a, b, y, np.int64(y.size)),
        )

    def elementwise_backward(
        self, operation: str, a: Any, b: Any, y: Any, dy: Any, da: Any | None, db: Any | None
    ) -> None:
        """Gradients of y = a (op) b; da or db None is skipped."""
        self._elementwise(
            "elementwise.cu", "elementwise_backward<{T}>", dy.size,
            (np.int32(ELEMENTWISE_OPS.index(operation)), a, b, y, dy, da, db, np.int64(dy.size)),
        )

    def power_forward(
        self, x: Any, scale: float, shift: float, power: float, base: Any, y: Any
    ) -> None:
        self._elementwise(
            "power.cu", "power_forward<{T}>", x.size,
            (x, self.scalar(scale), self.scalar(shift), self.scalar(power), base, y,
             np.int64(x.size)),
        )

    def power_backward(self, base: Any, scale: float, power: float, dy: Any, dx: Any) -> None:
        self._elementwise(
            "power.cu", "power_backward<{T}>", base.size,
            (base, self.scalar(scale), self.scalar(power), dy, dx, np.int64(base.size)),
        )

    # -- losses: value, gradients and reduction in one launch -------------------------------------
    def gaussian_recon_loss(
        self, mu: Any, sigma: Any, x: Any, scale: float, beta: float, mean_inv_var: float,
        loss: Any, dmu: Any | None, dsigma: Any | None, ivar: Any | None = None,
        mask: Any | None = None, noise_variance: bool = False,
    ) -> None:
        """Loss into loss[0]; gradients (times sigma^(2 beta), beta-NLL; dmu at a fixed inverse
        variance where mean_inv_var > 0) where not None. Pixels with mask != 0 or ivar <= 0 are
        left out; noise_variance adds 1/ivar to each pixel's variance."""
        self._reduce(
            "gaussian_recon_loss.cu", "gaussian_recon_loss<{T}>", mu.size,
            (mu, sigma, x, self.scalar(scale), self.scalar(beta), self.scalar(mean_inv_var),
             loss, dmu, dsigma, ivar, mask, np.int32(noise_variance),
             np.int64(mu.size)),
        )

    def gaussian_kl_loss(
        self, mu: Any, sigma: Any, scale: float, loss: Any, dmu: Any | None, dsigma: Any | None
    ) -> None:
        self._reduce(
            "gaussian_kl_loss.cu", "gaussian_kl_loss<{T}>", mu.size,
            (mu, sigma, self.scalar(scale), loss, dmu, dsigma, np.int64(mu.size)),
        )

    def square_loss(
        self, pred: Any, label: Any, scale: float, loss: Any,
        dpred: Any | None, dlabel: Any | None,
    ) -> None:
        self._reduce(
            "square_loss.cu", "square_loss<{T}>", pred.size,
            (pred, label, self.scalar(scale), loss, dpred, dlabel, np.int64(pred.size)),
        )

    # -- random numbers and data -------------------------------------------------------------------
    def random_state(self, seed: int, counter: int = 0) -> Any:
        """A Philox generator's device state {seed, draw counter, blocks_done}."""
        return self.cupy.asarray(np.asarray([seed, counter, 0], dtype=np.uint64))

    def read_counter(self, state: Any) -> int:
        return int(state[1:2].get(stream=self.stream)[0])

    def write_counter(self, state: Any, counter: int) -> None:
        state[1:2].set(np.asarray([counter], dtype=np.uint64), stream=self.stream)

    def philox_normal(self, out: Any, state: Any) -> None:
        """Fill out with N(0, 1) draws; the device advances the draw counter."""
        groups = (out.size + 3) // 4
        self._elementwise(
            "random_normal.cu", "philox_normal<{T}>", groups, (out, np.int64(out.size), state)
        )

    def noise_level(
        self, images: Any, clip: float, calibration: float, floor: float, lag: int, out: Any
    ) -> None:
        """out[i] = log of image i's clipped-difference noise sd (layers/noise_level.py)."""
        count, width = images.shape[0], images.shape[-1]
        rows = images.size // (count * width)
        self._launch(
            "noise_level.cu", "noise_level<{T}>", (count,), (BLOCK,),
            (images, np.int32(count), np.int32(rows), np.int32(width), self.scalar(clip),
             self.scalar(calibration), self.scalar(floor), np.int32(lag), out),
        )

    def gather_rows(self, dataset: Any, rows: Any, out: Any) -> None:
        """out[b] = dataset[rows[b]] for a device-resident dataset and a device index buffer."""
        row_size = out.size // out.shape[0]
        self._elementwise(
            "gather.cu", "gather_rows<{T}>", out.size,
            (dataset, rows, out, np.int32(out.shape[0]), np.int64(row_size)),
        )

    def accumulate_losses(self, loss_pointers: Any, totals: Any) -> None:
        """totals[0] += sum of the losses behind the pointer table; totals[1] += 1."""
        self._launch(
            "loss_totals.cu", "accumulate_losses<{T}>", (1,), (1,),
            (loss_pointers, np.int32(loss_pointers.size), totals),
        )

    # -- solvers ---------------------------------------------------------------------------------
    def solver_plan(self, params: Any) -> SolverPlan:
        """The device numbers of the update of one parameter buffer (made on its first update)."""
        key = (params.data.ptr, params.size)
        if key not in self._solver_plans:
            self._solver_plans[key] = SolverPlan(self.cupy, self.stream)
        return self._solver_plans[key]

    def solver_update(self, method: str, params: Any, grads: Any, states: list[Any],
                      bounds: Any, coefficients: Any, step: SolverStep) -> None:
        """interface.Kernels.solver_update in one launch; the device computes Adam's bias
        correction from its own t (see SolverPlan)."""
        plan = self.solver_plan(params)
        plan.sync(step)
        first, second = (states + [None])[:2]
        self._elementwise(
            "solver_update.cu", "solver_update<{T}>", params.size,
            (np.int32(SOLVER_METHODS[method]), params, grads, first, second,
             np.int64(params.size), bounds, coefficients, np.int32(coefficients.shape[0]),
             plan.hyper, plan.step_state),
        )
        plan.launched(step)

    # -- tiled GEMM ------------------------------------------------------------------------------
    def gemm_tiled(
        self, a: Any, b: Any, out: Any, m: int, n: int, k: int, trans_a: bool, trans_b: bool
    ) -> None:
        """out = op(a) op(b) with our shared-memory tiles; split-K partials summed in order."""
        plan = gemm_plan(m, n, k, self.sm_count)
        variant = f"gemm_tiled<{{T}}, {str(trans_a).lower()}, {str(trans_b).lower()}>"
        target = out
        if plan.splits > 1:
            target = self._gemm_workspace.get(plan.splits * m * n)
        self._launch(
            "gemm.cu", variant, plan.grid, (GEMM_THREADS,),
            (a, b, target, np.int32(m), np.int32(n), np.int32(k), np.int32(plan.k_chunk)),
        )
        if plan.splits > 1:
            self._elementwise(
                "gemm.cu", "gemm_sum_splits<{T}>", m * n,
                (target, np.int32(plan.splits), np.int64(m * n), out),
            )
