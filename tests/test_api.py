"""The public API is pinned, and the device side never imports torch or onnx."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import edgecl


def test_public_api_is_pinned():
    assert edgecl.__all__ == sorted(edgecl.__all__)
    assert set(edgecl.__all__) == {
        "BudgetError",
        "BundleError",
        "ConfigError",
        "DataError",
        "EdgeclError",
        "InputError",
        "LearnerConfig",
        "NCMHead",
        "OnlineFisher",
        "ProfileError",
        "ReservoirBuffer",
        "SLDAHead",
        "SoftmaxHead",
        "StateFileError",
        "StreamingLearner",
        "__version__",
    }
    for name in edgecl.__all__:
        assert hasattr(edgecl, name)


def test_user_errors_are_value_errors():
    for name in (
        "BudgetError",
        "BundleError",
        "ConfigError",
        "DataError",
        "InputError",
        "ProfileError",
        "StateFileError",
    ):
        err = getattr(edgecl, name)
        assert issubclass(err, ValueError) and issubclass(err, edgecl.EdgeclError)


def test_device_side_imports_without_torch_or_onnx():
    """Block torch/onnx at import time, import every device module, and use the learner."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import edgecl, numpy as np
        for m in pkgutil.walk_packages(edgecl.__path__, "edgecl."):
            if not m.name.startswith("edgecl.host"):
                importlib.import_module(m.name)
        lr = edgecl.StreamingLearner(edgecl.LearnerConfig(dim=3, max_classes=2, head="softmax"))
        lr.learn_one(np.ones(3), 1)
        assert lr.predict_one(np.ones(3)) == 1
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")]
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
