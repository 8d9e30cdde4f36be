"""OnnxExtractor: a frozen ONNX feature extractor run by onnxruntime, tuned for a device.

The session is configured from a :class:`~edgecl.runtime.profile.DeviceProfile`
(DESIGN §9): a fixed number of intra/inter-op threads,
``session.intra_op.allow_spinning = "0"`` so idle workers sleep instead of
burning a core, the CPU memory arena on or off, and every graph optimisation.
Execution providers come from the profile in order (TensorRT → CUDA → CPU on a
Jetson); those this onnxruntime build cannot run are dropped with one logged
warning naming them, and ``CPUExecutionProvider`` is always the last resort
(also when a GPU provider is listed but fails to start: driver, libraries).
TensorRT gets a persistent engine cache when the profile names a directory,
because building its engine on the first inference can take minutes.

Shapes stay fixed so onnxruntime plans memory once: :meth:`OnnxExtractor.embed`
always runs a batch of one from a preallocated float32 buffer, and
:meth:`OnnxExtractor.embed_many` runs chunks of exactly ``batch`` inputs (the
last chunk zero-padded). Normalisation ``(x - mean) / std`` is folded into the
graph by ``edgecl export`` (``"in_graph": true`` in the manifest); for models
made elsewhere (``"in_graph": false``) it is applied here, in numpy, on the
preallocated buffer.

A model given as bytes (what :meth:`~edgecl.runtime.bundle.Bundle.extractor`
passes, after checking their sha256) may not read "external data" files: its
session gets an empty private folder for them, so a hostile graph cannot pull
a file of the device into its weights.

>>> import numpy as np
>>> from edgecl.runtime.bundle import Bundle
>>> ex = Bundle.load().extractor()
>>> ex.providers, ex.dim, ex.input_shape
(['CPUExecutionProvider'], 64, (100, 6))
>>> ex.embed(np.zeros((100, 6))).shape
(64,)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgecl.errors import BundleError, InputError
from edgecl.runtime.profile import DeviceProfile

__all__ = ["OnnxExtractor", "select_providers", "session_options"]

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
# A small extractor needs far less than TensorRT's 1 GiB default workspace, and a
# Jetson's GPU shares its 4-8 GB of RAM with the OS.
TRT_WORKSPACE_BYTES = 256 << 20


def session_options(profile: DeviceProfile) -> ort.SessionOptions:
    """onnxruntime session options for ``profile`` (threads, spinning, arena, optimisation)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = profile.intra_op_threads
    so.inter_op_num_threads = profile.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = profile.arena
    spin = "1" if profile.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


def select_providers(
    profile: DeviceProfile,
    available: Sequence[str] | None = None,
    *,
    input_name: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    batch: int = 1,
) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """Providers of ``profile`` this build can run, with their options, and the missing ones.

    Returns ``(providers, missing)``: ``providers`` is a list of ``(name, options)`` in
    the profile's order, ending with the CPU provider; ``missing`` lists the
    requested providers that ``available`` (default:
    ``onnxruntime.get_available_providers()``) lacks.

    >>> p = DeviceProfile(name="j", providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    >>> select_providers(p, ["CPUExecutionProvider"])
    ([('CPUExecutionProvider', {})], ['CUDAExecutionProvider'])
    """
    have = set(ort.get_available_providers() if available is None else available)
    chosen: list[tuple[str, dict[str, str]]] = []
    missing: list[str] = []
    for name in profile.providers:
        if name not in have:
            missing.append(name)
        elif name != CPU:
            chosen.append((name, _provider_options(name, profile, input_name, input_shape, batch)))
    chosen.append((CPU, {}))
    return chosen, missing


def _provider_options(
    name: str,
    profile: DeviceProfile,
    input_name: str | None,
    input_shape: tuple[int, ...] | None,
    batch: int,
) -> dict[str, str]:
    if name == CUDA:
        # Grow the GPU arena by what is asked, not by powers of two: the GPU shares RAM.
        return {"arena_extend_strategy": "kSameAsRequested"}
    if name != TENSORRT:
        return {}
    opts = {"trt_max_workspace_size": str(TRT_WORKSPACE_BYTES)}
    cache = profile.engine_cache_path
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "TensorRT engine cache %s unusable (%s); engines will not persist", cache, exc
            )
            cache = None
    if cache is not None:
        opts |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    if input_name and input_shape:
        # One engine covering batch 1 (embed) up to `batch` (embed_many) instead of
        # one rebuild per new batch size.
        dims = "x".join(str(d) for d in input_shape)
        opts |= {
            "trt_profile_min_shapes": f"{input_name}:1x{dims}",
            "trt_profile_opt_shapes": f"{input_name}:1x{dims}",
            "trt_profile_max_shapes": f"{input_name}:{batch}x{dims}",
        }
    return opts


class OnnxExtractor:
    """Run a frozen ONNX extractor on one input (or a batch) at a time.

    Parameters
    ----------
    model : path-like or bytes
        The ``.onnx`` file, or its bytes (a :class:`~edgecl.runtime.bundle.Bundle`
        passes the bytes it has just verified).
    profile : DeviceProfile, optional
        Session settings and providers; default :meth:`DeviceProfile.default`.
    normalisation : mapping, optional
        ``{"mean": [...], "std": [...], "axis": int, "in_graph": bool}``; applied here
        only when ``in_graph`` is false. ``mean``/``std`` hold one value or one per
        entry of ``axis`` of the input.
    input_shape : tuple of int, optional
        Shape of one input, without the batch axis; checked against the model.
    dim : int, optional
        Embedding length; checked against the model.
    batch : int
        Chunk size of :meth:`embed_many`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        profile: DeviceProfile | None = None,
        normalisation: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        dim: int | None = None,
        batch: int = 64,
    ) -> None:
        self.profile = DeviceProfile.default() if profile is None else profile
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch = {batch!r}: must be an integer >= 1")
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        self._where = where
        src = model if isinstance(model, bytes) else str(Path(model))
        # A probe session on the CPU reads the graph's names and shapes, so the real
        # session can give TensorRT its shape profile.
        probe = self._session(src, [(CPU, {})], where)
        inputs, outputs = probe.get_inputs(), probe.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise BundleError(
                f"{where}: an extractor has one input and one output; this model has "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input_name: str = inputs[0].name
        self._output_name: str = outputs[0].name
        self.input_shape = self._check_shape(inputs[0].shape, input_shape, where)
        self.dim = self._check_dim(outputs[0].shape, dim, where)
        self.batch = batch
        requested, missing = select_providers(
            self.profile, input_name=self.input_name, input_shape=self.input_shape, batch=batch
        )
        if missing:
            log.warning(
                "execution provider(s) %s not available in this onnxruntime build "
                "(available: %s); falling back to %s",
                ", ".join(missing),
                ", ".join(ort.get_available_providers()),
                " → ".join(n for n, _ in requested),
            )
        self.missing_providers: list[str] = missing
        # The probe already is the session a CPU-only profile asks for.
        self._sess = probe
        if requested != [(CPU, {})]:
            try:
                self._sess = self._session(src, requested, where)
            except BundleError as exc:
                # A GPU stack that is installed but broken (driver, CUDA/TensorRT libraries,
                # an older onnxruntime that rejects an option) must not stop the device.
                gpu = [n for n, _ in requested if n != CPU]
                log.warning("%s failed to start (%s); falling back to %s", ", ".join(gpu), exc, CPU)
                self.missing_providers = missing + gpu
        self._mean, self._inv_std = _normalisation(normalisation, self.input_shape, where)
        # Preallocated inputs: one sample for embed, one chunk for embed_many.
        self._one = np.zeros((1, *self.input_shape), dtype=np.float32)
        self._chunk = np.zeros((batch, *self.input_shape), dtype=np.float32)

    # -- session -----------------------------------------------------------------
    def _session(
        self, src: str | bytes, providers: list[tuple[str, dict[str, str]]], where: str
    ) -> ort.InferenceSession:
        so = session_options(self.profile)
        with _no_external_data(so, isinstance(src, bytes)):
            try:
                return ort.InferenceSession(
                    src,
                    sess_options=so,
                    providers=[n for n, _ in providers],
                    provider_options=[o for _, o in providers],
                )
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                msg = " ".join(str(exc).split())[:300]
                raise BundleError(f"{where}: onnxruntime cannot load the model ({msg})") from None

    @staticmethod
    def _check_shape(
        graph: Sequence[Any], expected: Sequence[int] | None, where: str
    ) -> tuple[int, ...]:
        dims = list(graph)[1:]
        if expected is not None:
            exp = tuple(int(d) for d in expected)
            if len(dims) != len(exp) or any(
                isinstance(g, int) and g != e for g, e in zip(dims, exp, strict=True)
            ):
                raise BundleError(
                    f"{where}: model input shape {graph} does not match (batch, *{list(exp)})"
                )
            return exp
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise BundleError(
                f"{where}: model input shape {graph} has symbolic dims past the batch axis; "
                "pass input_shape"
            )
        return tuple(dims)

    @staticmethod
    def _check_dim(graph: Sequence[Any], expected: int | None, where: str) -> int:
        last = list(graph)[-1] if len(graph) else None
        if len(graph) != 2:
            raise BundleError(f"{where}: model output shape {graph}: expected (batch, dim)")
        if expected is not None:
            if isinstance(last, int) and last != expected:
                raise BundleError(
                    f"{where}: model embeds into {last} dims, the manifest says {expected}"
                )
            return int(expected)
        if not isinstance(last, int):
            raise BundleError(f"{where}: model output dim {last!r} is symbolic; pass dim")
        return last

    # -- public ------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, in priority order."""
        return list(self._sess.get_providers())

    def embed(self, x: Any) -> np.ndarray:
        """Embedding of one input (shape :attr:`input_shape`) as a 1-D float32 array.

        Raises :class:`~edgecl.errors.InputError` on a wrong shape or a NaN/inf.
        """
        a = np.asarray(x)
        if a.shape != self.input_shape:
            raise InputError(f"input has shape {a.shape}; expected {self.input_shape}")
        buf = self._one
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf, caught below
                buf[0] = a
        except (TypeError, ValueError) as exc:
            raise InputError(f"input must be numeric: {exc}") from None
        if not np.isfinite(buf).all():
            raise InputError("input contains NaN or inf (after conversion to float32)")
        self._normalise(buf)
        out = self._sess.run([self._output_name], {self.input_name: buf})[0]
        return np.asarray(out[0], dtype=np.float32)

    def embed_many(self, X: Any) -> np.ndarray:
        """Embeddings of ``X`` (shape ``(n, *input_shape)``) as an ``(n, dim)`` float32 array.

        Runs fixed-size chunks of :attr:`batch`, so the session sees at most two shapes.
        """
        A = np.asarray(X)
        if A.ndim != len(self.input_shape) + 1 or A.shape[1:] != self.input_shape:
            raise InputError(f"X has shape {A.shape}; expected (n, *{self.input_shape})")
        n = A.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        buf = self._chunk
        for start in range(0, n, self.batch):
            k = min(self.batch, n - start)
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    buf[:k] = A[start : start + k]
            except (TypeError, ValueError) as exc:
                raise InputError(f"X must be numeric: {exc}") from None
            buf[k:] = 0.0
            if not np.isfinite(buf[:k]).all():
                bad = start + int(np.flatnonzero(~np.isfinite(buf[:k]).reshape(k, -1).all(1))[0])
                raise InputError(f"X[{bad}] contains NaN or inf (after conversion to float32)")
            self._normalise(buf)
            res = self._sess.run([self._output_name], {self.input_name: buf})[0]
            out[start : start + k] = res[:k]
        return out

    def warmup(self, n: int = 3) -> None:
        """Run ``n`` dummy inputs (TensorRT builds its engine on the first one)."""
        for _ in range(n):
            self.embed(np.zeros(self.input_shape, dtype=np.float32))

    def _normalise(self, buf: np.ndarray) -> None:
        if self._mean is not None:
            np.subtract(buf, self._mean, out=buf)
            np.multiply(buf, self._inv_std, out=buf)

    def __repr__(self) -> str:
        return (
            f"OnnxExtractor({self._where!r}, input_shape={self.input_shape}, dim={self.dim}, "
            f"providers={self.providers})"
        )


@contextlib.contextmanager
def _no_external_data(so: ort.SessionOptions, from_bytes: bool) -> Iterator[None]:
    """Give onnxruntime an empty, private folder for a model's "external data" files.

    An ONNX tensor may keep its values in another file, named by a relative path.
    For a model loaded from bytes onnxruntime resolves that path against the
    *working directory* (``/`` under systemd), so a hostile model could read any
    file the daemon can as its weights. A bundle never has external data (the
    exporter embeds every weight and the manifest pins one file), so the folder
    onnxruntime may read from is a fresh empty one: any such reference fails.
    """
    if not from_bytes:
        yield
        return
    key = "session.model_external_initializers_file_folder_path"
    try:
        tmp = tempfile.TemporaryDirectory(prefix="edgecl-no-external-data-")
    except OSError:  # no writable temp dir: a random name nobody can have created
        so.add_session_config_entry(
            key, os.path.join(tempfile.gettempdir(), f"edgecl-{secrets.token_hex(16)}")
        )
        yield
        return
    with tmp as folder:
        so.add_session_config_entry(key, folder)
        yield


def _normalisation(
    norm: Mapping[str, Any] | None, input_shape: tuple[int, ...], where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Broadcastable float32 ``mean`` and ``1/std`` for numpy-side normalisation, or Nones."""
    if norm is None or norm.get("in_graph", False):
        return None, None
    try:
        mean = np.asarray(norm["mean"], dtype=np.float32).ravel()
        std = np.asarray(norm["std"], dtype=np.float32).ravel()
        axis = int(norm.get("axis", -1))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: normalisation is malformed ({exc})") from None
    ndim = len(input_shape)
    if not -ndim <= axis < ndim:
        raise BundleError(f"{where}: normalisation axis {axis} outside the input's {ndim} axes")
    axis %= ndim
    n = input_shape[axis]
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, n) or not np.isfinite(v).all():
            raise BundleError(
                f"{where}: normalisation {name} must hold 1 or {n} finite values, got {v.size}"
            )
    if (std <= 0).any():
        raise BundleError(f"{where}: normalisation std must be > 0")
    shape = [1] * (ndim + 1)
    if mean.size > 1 or std.size > 1:
        shape[axis + 1] = n
    mean = np.broadcast_to(mean, (n,) if mean.size > 1 or std.size > 1 else (1,))
    inv = np.broadcast_to(1.0 / std, mean.shape)
    return mean.reshape(shape).astype(np.float32), inv.reshape(shape).astype(np.float32)
