"""What an export produced and measured: :class:`ExportReport` (also the manifest's record).

``edgecl export`` prints :meth:`ExportReport.summary`; the same figures (parity of
onnxruntime against torch or numpy, held-out accuracy of the shipped head, int8
quantisation, the random-feature stage) are written into the bundle's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecl.runtime.bundle import Bundle

__all__ = ["TOLERANCE", "ExportReport"]

#: Largest |onnxruntime − reference| an export accepts on its probe inputs.
TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """What an export produced and measured (also written to the manifest)."""

    path: Path
    bundle: Bundle
    parity_max_abs_diff: float
    parity_n: int
    float_bytes: int
    model_bytes: int
    head_bytes: int
    total_bytes: int
    quantize: str | None = None
    accuracy: dict[str, float | None] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    signed_by: str | None = None  # fingerprint of the signing key's public half
    stage: dict[str, Any] | None = None  # the random-feature stage, when there is one
    parity_against: str = "torch"  # what onnxruntime was compared with
    parity_tolerance: float = TOLERANCE

    @property
    def standardize(self) -> bool:
        """Whether the shipped head standardises embeddings per user."""
        return bool((self.bundle.manifest.get("head") or {}).get("standardize", False))

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary (``--json``)."""
        return {
            "path": str(self.path),
            "parity": {"max_abs_diff": self.parity_max_abs_diff, "n": self.parity_n},
            "float_bytes": self.float_bytes,
            "model_bytes": self.model_bytes,
            "head_bytes": self.head_bytes,
            "total_bytes": self.total_bytes,
            "quantize": self.quantize,
            "quantization": self.quantization,
            "accuracy": self.accuracy,
            "standardize": self.standardize,
            "excluded_classes": list(self.bundle.excluded_classes),
            "embedding_dim": self.bundle.embedding_dim,
            "input_shape": list(self.bundle.input_shape),
            "signed_by": self.signed_by,
            "random_features": self.stage,
        }

    @classmethod
    def written(
        cls,
        bundle: Bundle,
        model: bytes,
        head: bytes | None,
        diff: float,
        n: int,
        *,
        float_bytes: int,
        accuracy: dict[str, Any],
        stage: dict[str, Any] | None,
        parity_against: str,
        parity_tolerance: float = TOLERANCE,
        quantize: str | None = None,
        quantization: dict[str, Any] | None = None,
    ) -> ExportReport:
        """The report of ``bundle`` as written: its ``model`` and ``head`` bytes, and sizes.

        ``diff`` is the parity check's largest difference over ``n`` inputs.
        """
        return cls(
            path=bundle.path, bundle=bundle, parity_max_abs_diff=diff, parity_n=n,
            float_bytes=float_bytes, model_bytes=len(model),
            head_bytes=0 if head is None else len(head),
            total_bytes=sum(p.stat().st_size for p in bundle.path.iterdir()),
            quantize=quantize, accuracy=accuracy, quantization=quantization,
            signed_by=bundle.signed_by, stage=stage, parity_against=parity_against,
            parity_tolerance=parity_tolerance,
        )  # fmt: skip

    def summary(self) -> str:
        """A few readable lines for the terminal."""
        kb = 1024
        acc = self.accuracy
        lines = [
            f"edgecl export: wrote {self.path} ({self.total_bytes / kb:.1f} KiB: model.onnx "
            f"{self.model_bytes / kb:.1f} KiB, head {self.head_bytes / kb:.1f} KiB)",
            f"  input {list(self.bundle.input_shape)} float32 → embedding "
            f"{self.bundle.embedding_dim}; parity onnxruntime vs {self.parity_against}: max "
            f"|diff| {self.parity_max_abs_diff:.2e} over {self.parity_n} inputs "
            f"(limit {self.parity_tolerance:g})",
        ]
        if self.stage is not None:
            # A stage alone was compared with numpy in the line above already.
            lines.append(_stage_line(self.stage, parity=self.parity_against != "numpy"))
        if self.quantization is not None:
            q = self.quantization
            lines.append(
                f"  int8: {q['float_bytes'] / kb:.1f} → {q['int8_bytes'] / kb:.1f} KiB "
                f"({q['size_ratio']:.2f}x); head accuracy on held-out "
                f"{_pct(q.get('float_heldout_accuracy'))} → {_pct(q.get('int8_heldout_accuracy'))}"
            )
        if acc.get("heldout") is not None:
            std = ", standardised per user" if self.standardize else ""
            lines.append(
                f"  head ({acc.get('head')}{std}): held-out accuracy {_pct(acc['heldout'])} on "
                f"{acc.get('heldout_n')} inputs ({acc.get('heldout_name')}), "
                f"training {_pct(acc.get('train'))}"
            )
            if acc.get("heldout_standardised") is not None:
                lines.append(
                    f"  held-out accuracy with each subject's own statistics (no labels): "
                    f"{_pct(acc['heldout_standardised'])}"
                )
        if self.signed_by is not None:
            lines.append(f"  manifest.sig: signed, public key {self.signed_by}")
        if self.head_bytes == 0:
            why = "--head none" if acc.get("head") is None else "no pre-training data (--data)"
            lines.append(f"  no initial head in the bundle: {why}")
        excluded = self.bundle.excluded_classes
        if excluded:
            names = self.bundle.class_names
            shown = ", ".join(f"{names[c]} ({c})" for c in excluded)
            lines.append(f"  excluded from pre-training and the head: {shown}")
        return "\n".join(lines)


def _stage_line(st: dict[str, Any], parity: bool) -> str:
    line = f"  random features: {st['kind']} {st['input_dim']} → {st['m']}, seed {st['seed']}"
    if st["gamma"] is not None:
        line += f", gamma {st['gamma']:.6g} ({st['gamma_source']})"
    if parity:
        p = st["parity"]
        line += (
            f"; onnxruntime vs numpy: max |diff| {p['max_abs_diff']:.2e} over {p['n']} inputs "
            f"(limit {p['tolerance']:g})"
        )
    return line


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"
