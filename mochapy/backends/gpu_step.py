"""Whole training steps on the GPU (batch in, forward, backward, update) as one CUDA graph.

The first step runs eagerly (it compiles kernels and allocates workspaces); the second is captured
into a CUDA graph and every later step replays it. Per step the host only picks the batch's rows
(the data layer's own BatchOrder, so resumes see the same batches as on the CPU), copies that index
buffer in, writes the solver's hyperparameters if they changed, and launches the graph. Losses are
summed on the device and read every few iterations, not every step. When a net cannot be captured,
or no GEMM engine survives capture, steps run eagerly with a warning saying why.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np

from mochapy.backends.gpu_gemm import first_line


class DataFeed:
    """A data layer's dataset kept on the GPU; each step gathers its batch by a device index buffer.

    Works for any source layer with `arrays` (host rows, one array per top) and `order` (a
    BatchOrder): HDF5Data and MemoryData.
    """

    def __init__(self, backend: Any, layer: Any) -> None:
        self.backend = backend
        self.layer = layer
        self.datasets = [backend.from_host(array) for array in layer.arrays]
        self.rows = backend.xp.zeros(layer.tops[0].batch_size, dtype=np.int64)

    @staticmethod
    def fits(backend: Any, layer: Any) -> bool:
        """Whether the layer's whole dataset can live on the GPU (at most half its free memory)."""
        if not (hasattr(layer, "arrays") and hasattr(layer, "order")):
            return False
        free_bytes, _ = backend.xp.cuda.runtime.memGetInfo()
        return sum(array.nbytes for array in layer.arrays) <= free_bytes // 2

    def upload(self) -> None:
        """Host part: the next batch's row indices, from the layer's own order, into the buffer."""
        rows = np.ascontiguousarray(self.layer.order.next(), dtype=np.int64)
        self.rows.set(rows, stream=self.backend.stream)

    def gather(self) -> None:
        """Device part: the batch, gathered from the resident dataset."""
        for dataset, top in zip(self.datasets, self.layer.tops, strict=True):
            self.backend.kernels.gather_rows(dataset, self.rows, top.data)


class StepRunner:
    """Runs training steps of `net` with `solver` on the GPU backend, as a CUDA graph when it can.

    `mode` is "graph" or "eager"; `gemm` names the GEMM engine in use; `note` says why a graph
    was not used (empty when it was, or before the capture has been tried).
    """

    def __init__(self, backend: Any, net: Any, solver: Any, graph: bool = True) -> None:
        self.backend = backend
        self.net = net
        self.solver = solver
        self.kernels = backend.kernels
        self.feeds: list[DataFeed] = []
        self.forward_steps: list[Any] = []
        blockers: list[str] = []
        for layer in net.layers:
            if layer.config.is_source and hasattr(layer, "order"):
                if DataFeed.fits(backend, layer):
                    feed = DataFeed(backend, layer)
                    self.feeds.append(feed)
                    self.forward_steps.append(feed.gather)
                    continue
                blockers.append(f"data layer {layer.config.name!r} is too large to keep on the GPU")
            self.forward_steps.append(layer.forward)
        for param in net.params.params.values():
            constraint = param.spec.constraint
            if constraint.type != "none" and constraint.every_n_iter > 1:
                blockers.append(
                    f"the constraint on {param.key!r} applies every {constraint.every_n_iter} "
                    "iterations, which a replayed graph cannot follow"
                )
        self.loss_pointers = backend.xp.asarray(
            [layer.loss_value.data.ptr for layer in net.loss_layers], dtype=np.uint64
        )
        self.totals = backend.xp.zeros(2, dtype=np.float64)
        self.graph: Any = None
        self.mode = "eager"
        self.note = "; ".join(blockers) if graph else "CUDA graphs disabled"
        self._capture_pending = graph and not blockers
        self._steps_run = 0
        self._private_pools: list[Any] = []  # memory that captured graphs may point at
        self.gemm = backend.gemm_engine.name

    # -- one step --------------------------------------------------------------------------------
    def step(self) -> None:
        """One training step: solver.iteration advances by one, as after `solver.update()`."""
        solver = self.solver
        with self.backend.stream:
            for feed in self.feeds:
                feed.upload()
            solver.iteration += 1
            numbers = solver.step_numbers()
            plan = self.kernels.solver_plan(solver.net.params.data)
            plan.sync(numbers)
            if self._capture_pending and self._steps_run > 0:  # the first step warms up
                self._capture_pending = False
                self._capture()
            if self.graph is not None:
                self.graph.launch()
                plan.launched(numbers)
            else:
                self._device_step()
        self._steps_run += 1

    def _device_step(self) -> None:
        """Everything a step does on the device (what a capture records)."""
        for forward in self.forward_steps:
            forward()
        self.net.backward()
        self.solver.apply_update()
        self.kernels.accumulate_losses(self.loss_pointers, self.totals)

    # -- capture ---------------------------------------------------------------------------------
    def _capture(self) -> None:
        """Capture `_device_step` into a graph, trying each allowed GEMM engine in turn.

        Every kernel is compiled first (a module load inside a capture invalidates it). The
        backend's own engine is restored afterwards: the graph keeps the engine it recorded, and
        other nets on the backend (evaluation) go on with the one they were using.
        """
        self.kernels.compile_all()
        plan = self.kernels.solver_plan(self.solver.net.params.data)
        eager_engine = self.backend.gemm_engine.name
        reasons = []
        try:
            for name in self.backend.capture_candidates():
                try:
                    self.backend.use_gemm(name)
                    with plan.capturing():
                        self.graph = self._record()
                except Exception as error:
                    reasons.append(f"{name}: {first_line(error)}")
                    continue
                self.mode, self.gemm, self.note = "graph", name, ""
                return
        finally:
            self.backend.use_gemm(eager_engine)
        self.note = "CUDA graph capture failed (" + "; ".join(reasons) + ")"
        warnings.warn(f"{self.note}; training steps run eagerly", RuntimeWarning, stacklevel=3)

    def _record(self) -> Any:
        """One stream capture of a device step. Temporaries come from a private memory pool that
        lives as long as the graph, so nothing the graph uses is ever handed out again."""
        cupy = self.backend.xp
        stream = self.backend.stream
        pool = cupy.cuda.MemoryPool()
        self._private_pools.append(pool)
        with cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                self._device_step()
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                raise
            return stream.end_capture()

    # -- losses ----------------------------------------------------------------------------------
    def take_losses(self) -> tuple[float, int]:
        """(sum of the net's total loss, number of steps) since the last call; then reset."""
        with self.backend.stream:
            host = self.totals.get(stream=self.backend.stream)
            self.totals.fill(0)
        return float(host[0]), int(host[1])

    def describe(self) -> str:
        """One line for logs and benchmark notes: mode, GEMM engine, and why not a graph."""
        text = f"{self.mode} (gemm {self.gemm})"
        return f"{text}: {self.note}" if self.note else text

