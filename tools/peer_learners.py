"""The learners ``bench_peers.py`` compares, behind one small interface.

Every learner has ``prepare(x)`` (turn one float32 row into the library's own
input: a dict for river, a (1, d) array for scikit-learn, a tensor for torch —
done outside the timed calls), ``learn_one(p, y)``, ``predict_one(p) -> int``
(-1 before anything was learned), ``predict_many(X) -> ndarray`` (accuracy
only, untimed) and ``memory() -> (bytes, measure)`` where the learner can count
its own state, else ``None`` (the benchmark then measures it with tracemalloc).

Families:

* ``edgecl`` — :class:`edgecl.StreamingLearner` with the README's head settings
  (``tools/report_eval.py`` ROWS). edgecl's own input validation (float64
  conversion, shape and finiteness checks) is inside its timed calls. Plus
  :class:`EdgeclRff`, SLDA behind an ``rff`` stage of 2,048 features; a learner
  with a ``prime(first_samples)`` method is primed before each pass (untimed).
* ``torch`` — edgecl's softmax head as the same algorithm in torch
  (:class:`TorchSoftmax`: a zero-initialised linear layer, ``torch.optim.SGD``
  on the new sample plus ``replay_k`` distinct rows of a float16 reservoir
  buffer, EWC++ with the new sample's Fisher and the proximal step, edgecl's
  task-free plateau trigger; tested equal to edgecl on a fixed stream), plus
  Avalanche 0.6.0's ``StreamingLDA.fit``/``predict`` transcribed (Avalanche
  itself cannot be imported here: see :func:`avalanche_status`).
* ``river`` / ``sklearn`` — their online classifiers, default settings except
  where noted (KNN window = edgecl's 1000 replay slots).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from benchkit import config_for
from report_eval import ROWS

from edgecl import LearnerConfig, OnlineFisher, StreamingLearner

__all__ = ["EdgeclRff", "LearnerSpec", "avalanche_status", "learner_specs"]

INSTALL_HINT = "not installed: pip install 'edgecl[peers]'"
EDGECL_ROWS = ("ncm", "slda", "softmax", "softmax+replay", "softmax+replay+ewc")
SLOTS = 1000  # replay slots of every buffered learner (edgecl, torch, river KNN window)


@dataclass(frozen=True)
class LearnerSpec:
    """A named learner factory; ``skip`` says why it cannot run here (None = it can)."""

    name: str
    family: str
    make: Callable[[int, int, int], Any]  # (dim, n_classes, seed) -> learner
    skip: str | None = None
    max_dim: int | None = None  # above this dim the learner is skipped as too slow
    note: str = ""


# -- edgecl ------------------------------------------------------------------


class EdgeclLearner:
    def __init__(self, row: str, dim: int, n_classes: int, seed: int) -> None:
        kw = dict(ROWS[row])
        slots = kw.pop("buffer_capacity", 0)
        self.lr = StreamingLearner(config_for(dim, n_classes, slots, seed, **kw))

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x

    def learn_one(self, x: np.ndarray, y: int) -> None:
        self.lr.learn_one(x, y)

    def predict_one(self, x: np.ndarray) -> int:
        return self.lr.predict_one(x)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self.lr.predict_many(X)

    def memory(self) -> tuple[int, str]:
        return self.lr.memory_report()["state_bytes"], "state"


class EdgeclRff:
    """edgecl's SLDA behind a random-feature stage (RanDumb: ``rff`` of the raw input into a
    streaming LDA), as ``edgecl eval --random-features M`` builds it: γ by the median
    heuristic on the first 1,000 training samples of the stream (:meth:`prime`, before the
    pass), the wide head's Woodbury/float32 defaults. The stage (numpy in float32, as the
    ONNX graph computes it) runs inside the timed ``predict_one`` — once per sample;
    ``learn_one`` reuses its output."""

    def __init__(
        self, dim: int, n_classes: int, seed: int, m: int = 2048, shrinkage: float | None = None
    ) -> None:
        self.dim, self.n_classes, self.seed, self.m = dim, n_classes, seed, m
        self.shrinkage = shrinkage
        self.rf: Any = None
        self.lr: StreamingLearner | None = None
        self._last: tuple[Any, np.ndarray] | None = None

    def prime(self, first: np.ndarray) -> None:
        from edgecl.learner.slda_woodbury import large_dim_options
        from edgecl.runtime.random_features import make_stage

        self.rf, _ = make_stage("rff", self.m, self.dim, seed=self.seed, samples=lambda: first)
        extra = {} if self.shrinkage is None else {"slda_shrinkage": self.shrinkage}
        opts = {**large_dim_options("slda", self.m), **extra}
        cfg = config_for(self.m, self.n_classes, 0, self.seed, head="slda", **opts)
        self.lr = StreamingLearner(cfg)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x

    def _phi(self, x: np.ndarray) -> np.ndarray:
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.rf.transform32(x)[0])
        return self._last[1]

    def learn_one(self, x: np.ndarray, y: int) -> None:
        assert self.lr is not None, "prime() first"
        self.lr.learn_one(self._phi(x), y)

    def predict_one(self, x: np.ndarray) -> int:
        assert self.lr is not None, "prime() first"
        return self.lr.predict_one(self._phi(x))

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        assert self.lr is not None, "prime() first"
        return self.lr.predict_many(self.rf.transform32(X))

    def memory(self) -> tuple[int, str]:
        assert self.lr is not None, "prime() first"
        return self.lr.memory_report()["state_bytes"], "state"


# -- torch -------------------------------------------------------------------


class TorchSoftmax:
    """edgecl's softmax + replay + EWC++ update, written in torch as a torch user would.

    The same algorithm as :class:`edgecl.learner.softmax_head.SoftmaxHead`, step for step:

    * ``torch.optim.SGD`` (edgecl's ``lr`` and ``weight_decay``) on the mean
      cross-entropy of the new sample plus ``replay_k`` *distinct* rows of the
      float16 reservoir buffer (Algorithm R), drawn by Floyd's algorithm as
      edgecl draws them (k draws, not a permutation of the whole buffer); the
      logits of classes never seen are masked to −inf;
    * the running Fisher ``F ← γF + (1−γ)g₀²`` from the *new sample's* squared
      gradient only, ``g₀² = (p₀ − onehot)² ⊗ [x | 1]²`` (replayed rows are not in it),
      updated before the step;
    * EWC as the proximal step after SGD, ``θ ← (θ' + ηλFθ*) / (1 + ηλF)``;
    * anchors refreshed by edgecl's own task-free plateau trigger on the new
      sample's cross-entropy before the step.

    Only the generators differ (torch's instead of numpy's): :meth:`_choose` and
    :meth:`_slot` are the two places randomness enters, so a test can feed both
    learners the same draws. ``dtype`` is float32 for the benchmark (torch's
    default); float64 reproduces edgecl to rounding.
    """

    def __init__(
        self,
        dim: int,
        n_classes: int,
        seed: int,
        replay_k: int,
        ewc_lambda: float,
        *,
        slots: int = SLOTS,
        dtype: str = "float32",
        **settings: Any,
    ) -> None:
        import torch

        self.torch = torch
        cfg = LearnerConfig(
            dim=dim, max_classes=n_classes, head="softmax", seed=seed, replay_k=replay_k, **settings
        )
        self.k, self.lam, self.lr = replay_k, ewc_lambda, cfg.lr
        self.dtype = getattr(torch, dtype)
        self.gen = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(dim, n_classes, dtype=self.dtype)
        torch.nn.init.zeros_(self.lin.weight)
        torch.nn.init.zeros_(self.lin.bias)
        self.params = list(self.lin.parameters())
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.seen = torch.zeros(n_classes, dtype=torch.bool)
        cap = slots if replay_k else 0
        self.buf_x = torch.zeros(cap, dim, dtype=getattr(torch, cfg.buffer_dtype))
        self.buf_y = torch.zeros(cap, dtype=torch.long)
        self.stored = self.offered = 0
        self.fisher = [torch.zeros_like(p) for p in self.params]  # [F_W, F_b]
        self.anchor = [torch.zeros_like(p) for p in self.params]
        self.anchored = False
        self.consolidations = 0
        self.fisher_steps = 0
        self.decay = cfg.fisher_decay
        # Only its task-free plateau trigger is used: the Fisher itself lives in torch.
        self.trigger = OnlineFisher(
            (1,),
            lam=0.0,
            consolidate_every=cfg.consolidate_every,
            on_plateau=cfg.consolidate_on_plateau,
            window=cfg.loss_window,
            peak_ratio=cfg.peak_ratio,
            plateau_tol=cfg.plateau_tol,
        )

    def prepare(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(x)

    def learn_one(self, x: Any, y: int) -> None:
        torch = self.torch
        self.seen[y] = True
        x = x.to(self.dtype)
        xb, yb = x[None, :], torch.tensor([y])
        idx = self._choose(self.k)
        if idx:
            xb = torch.cat([xb, self.buf_x[idx].to(self.dtype)])
            yb = torch.cat([yb, self.buf_y[idx]])
        logits = self.lin(xb).masked_fill(~self.seen, float("-inf"))
        ce = torch.nn.functional.cross_entropy(logits, yb, reduction="none")
        self.opt.zero_grad()
        ce.mean().backward()
        with torch.no_grad():
            if self.lam:
                # ∂CE(x₀)/∂logits = p₀ − onehot; its square times [x | 1]² is g₀².
                g2 = torch.softmax(logits[0], 0)
                g2[y] -= 1.0
                g2.square_()
                fw, fb = self.fisher
                if self.fisher_steps == 0:
                    torch.outer(g2, x * x, out=fw)
                    fb.copy_(g2)
                else:
                    fw.mul_(self.decay).addr_(g2, x * x, alpha=1.0 - self.decay)
                    fb.mul_(self.decay).add_(g2, alpha=1.0 - self.decay)
                self.fisher_steps += 1
            self.opt.step()
            if self.anchored:
                for p, f, a in zip(self.params, self.fisher, self.anchor, strict=True):
                    k = f * (self.lr * self.lam)
                    p.add_(k * a).div_(k + 1.0)
        if self.lam and self.trigger.observe_loss(float(ce[0].detach())):
            with torch.no_grad():
                for p, a in zip(self.params, self.anchor, strict=True):
                    a.copy_(p)
            self.anchored = True
            self.consolidations += 1
        self._store(x, y)

    def _choose(self, k: int) -> list[int]:
        """``min(k, stored)`` distinct buffer rows, every subset equally likely (Floyd)."""
        n = self.stored
        k = min(k, n)
        if k <= 0:
            return []
        u = self.torch.rand(k, generator=self.gen, dtype=self.torch.float64).tolist()
        chosen: list[int] = []
        for i, r in enumerate(u):
            j = n - k + i
            t = int(r * (j + 1))
            chosen.append(j if t in chosen else t)
        return chosen

    def _slot(self) -> int:
        """Algorithm R: the slot of the ``offered``-th item, or -1 if it is not kept."""
        cap = self.buf_y.shape[0]
        if self.stored < cap:
            return self.stored
        j = int(self.torch.randint(self.offered, (1,), generator=self.gen))
        return j if j < cap else -1

    def _store(self, x: Any, y: int) -> None:
        if not self.buf_y.shape[0]:
            return
        self.offered += 1
        slot = self._slot()
        if slot >= 0:
            self.buf_x[slot], self.buf_y[slot] = x, y
            self.stored = max(self.stored, slot + 1)

    def predict_one(self, x: Any) -> int:
        if not bool(self.seen.any()):
            return -1
        with self.torch.no_grad():
            s = self.lin(x.to(self.dtype)).masked_fill(~self.seen, float("-inf"))
            return int(s.argmax())

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        if not bool(self.seen.any()):
            return np.full(len(X), -1)
        with self.torch.no_grad():
            s = self.lin(self.torch.from_numpy(X).to(self.dtype))
            return s.masked_fill(~self.seen, float("-inf")).argmax(dim=1).numpy()

    def theta(self) -> np.ndarray:
        """``[W | b]`` as edgecl lays out ``theta_`` (float64)."""
        w, b = (p.detach().double().numpy() for p in self.params)
        return np.hstack([w, b[:, None]])

    def memory(self) -> tuple[int, str]:
        ts = [*self.params, *self.fisher, *self.anchor, self.buf_x, self.buf_y, self.seen]
        ts += [p.grad for p in self.params if p.grad is not None]
        if not self.lam:  # no Fisher and anchors in the plain-replay variant
            ts = [t for t in ts if not any(t is f for f in (*self.fisher, *self.anchor))]
        return sum(t.numel() * t.element_size() for t in ts), "tensors"


class AvalancheSLDA:
    """Avalanche 0.6.0 ``StreamingLDA.fit`` / ``.predict``, transcribed line for line.

    From ``avalanche/training/supervised/deep_slda.py`` (MIT licence): Σ starts
    at all ones, the rank-one update weights by the global count N, and
    ``predict`` recomputes ``pinverse((1−ε)Σ + εI)`` whenever a sample arrived
    since the last call — so in a per-sample loop every predict pays an SVD.
    Unseen classes keep μ = 0 and score 0, as in Avalanche.
    """

    def __init__(self, dim: int, n_classes: int, shrinkage: float = 1e-4) -> None:
        import torch

        self.torch = torch
        self.input_size, self.shrinkage_param = dim, shrinkage
        self.muK = torch.zeros((n_classes, dim))
        self.cK = torch.zeros(n_classes)
        self.Sigma = torch.ones((dim, dim))
        self.num_updates = 0
        self.Lambda = torch.zeros_like(self.Sigma)
        self.prev_num_updates = -1

    def prepare(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(x)[None, :]

    def learn_one(self, x: Any, y: int) -> None:
        with self.torch.no_grad():
            y = self.torch.tensor([y])
            x_minus_mu = x - self.muK[y]
            mult = self.torch.matmul(x_minus_mu.transpose(1, 0), x_minus_mu)
            delta = mult * self.num_updates / (self.num_updates + 1)
            self.Sigma = (self.num_updates * self.Sigma + delta) / (self.num_updates + 1)
            self.muK[y, :] += (x - self.muK[y, :]) / (self.cK[y] + 1).unsqueeze(1)
            self.cK[y] += 1
            self.num_updates += 1

    def _scores(self, X: Any) -> Any:
        torch = self.torch
        with torch.no_grad():
            if self.prev_num_updates != self.num_updates:
                self.Lambda = torch.pinverse(
                    (1 - self.shrinkage_param) * self.Sigma
                    + self.shrinkage_param * torch.eye(self.input_size)
                )
                self.prev_num_updates = self.num_updates
            M = self.muK.transpose(1, 0)
            W = torch.matmul(self.Lambda, M)
            c = 0.5 * torch.sum(M * W, dim=0)
            return torch.matmul(X, W) - c

    def predict_one(self, x: Any) -> int:
        return -1 if self.num_updates == 0 else int(self._scores(x)[0].argmax())

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        if self.num_updates == 0:
            return np.full(len(X), -1)
        return self._scores(self.torch.from_numpy(X)).argmax(dim=1).numpy()

    def memory(self) -> tuple[int, str]:
        ts = (self.muK, self.cK, self.Sigma, self.Lambda)
        return sum(t.numel() * t.element_size() for t in ts), "tensors"


def avalanche_status() -> str:
    """Why Avalanche's own StreamingLDA is or is not importable in this environment."""
    if importlib.util.find_spec("avalanche") is None:
        return (
            "avalanche-lib not installed. avalanche-lib 0.6.0 requires torchvision (plus "
            "torchmetrics, pytorchcv, wandb, tensorboard, gdown, qpsolvers); the torchvision pip "
            "resolves for torch==2.13.0 (0.28.0, manylinux) is a CUDA build whose _C.so needs "
            "libtorch_cuda.so and libc10_cuda.so, which torch 2.13.0+cpu does not ship, so "
            "`import torchvision` fails ('operator torchvision::nms does not exist'); "
            "avalanche.training imports torchvision (benchmarks/utils/transforms.py), so even "
            "`pip install --no-deps avalanche-lib` cannot import StreamingLDA. Its fit/predict "
            "are transcribed instead (avalanche-slda)"
        )
    try:
        from avalanche.training import StreamingLDA  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return f"avalanche installed but `from avalanche.training import StreamingLDA` fails: {exc}"
    return "importable (the transcription is still what is timed; see peer_learners.py)"


# -- river and scikit-learn --------------------------------------------------


class RiverLearner:
    def __init__(self, model: Any) -> None:
        self.m = model

    def prepare(self, x: np.ndarray) -> dict[int, float]:
        return dict(enumerate(x.tolist()))

    def learn_one(self, x: dict[int, float], y: int) -> None:
        self.m.learn_one(x, y)

    def predict_one(self, x: dict[int, float]) -> int:
        p = self.m.predict_one(x)
        return -1 if p is None else int(p)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.predict_one(self.prepare(x)) for x in X], dtype=np.int64)

    def memory(self) -> None:
        return None


class SklearnLearner:
    def __init__(self, model: Any, n_classes: int) -> None:
        self.m, self.classes = model, np.arange(n_classes)
        self.fitted = False

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x[None, :]

    def learn_one(self, x: np.ndarray, y: int) -> None:
        # partial_fit must be told every class on its first call (no new labels later).
        self.m.partial_fit(x, [y], classes=None if self.fitted else self.classes)
        self.fitted = True

    def predict_one(self, x: np.ndarray) -> int:
        return int(self.m.predict(x)[0]) if self.fitted else -1

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self.m.predict(X) if self.fitted else np.full(len(X), -1)

    def memory(self) -> None:
        return None


def _river(factory: Callable[[], Any]) -> Callable[[int, int, int], RiverLearner]:
    return lambda dim, n_classes, seed: RiverLearner(factory())


def _sklearn(factory: Callable[[int], Any]) -> Callable[[int, int, int], SklearnLearner]:
    return lambda dim, n_classes, seed: SklearnLearner(factory(seed), n_classes)


def learner_specs(
    rff_m: int | None = None, rff_shrinkage: float | None = None, er_slots: int | None = None
) -> list[LearnerSpec]:
    """Every learner of the comparison; ``skip`` is set for those that cannot run here.

    Opt-in rows: ``rff_m`` adds ``edgecl slda+rff<M>`` (:class:`EdgeclRff`, with
    ``rff_shrinkage`` if given), ``er_slots`` a torch experience-replay learner with that
    many slots (:class:`TorchSoftmax` with replay, no EWC)."""
    specs = [
        LearnerSpec(f"edgecl {row}", "edgecl", lambda d, c, s, r=row: EdgeclLearner(r, d, c, s))
        for row in EDGECL_ROWS
    ]
    if rff_m:
        specs.append(
            LearnerSpec(
                f"edgecl slda+rff{rff_m}",
                "edgecl",
                lambda d, c, s: EdgeclRff(d, c, s, m=rff_m, shrinkage=rff_shrinkage),
                note=f"rff stage of {rff_m:,} features (median-heuristic γ) before a Woodbury SLDA",
            )
        )
    has = {m: importlib.util.find_spec(m) is not None for m in ("torch", "river", "sklearn")}
    torch_skip = None if has["torch"] else "not installed: pip install 'edgecl[host]'"
    specs += [
        LearnerSpec(
            "torch softmax+replay",
            "torch",
            lambda d, c, s: TorchSoftmax(d, c, s, replay_k=8, ewc_lambda=0.0),
            torch_skip,
        ),
        LearnerSpec(
            "torch softmax+replay+ewc",
            "torch",
            lambda d, c, s: TorchSoftmax(d, c, s, replay_k=8, ewc_lambda=1.0),
            torch_skip,
        ),
        *(
            [
                LearnerSpec(
                    f"torch ER-{er_slots} (softmax+replay, {er_slots} slots)",
                    "torch",
                    lambda d, c, s: TorchSoftmax(d, c, s, 8, 0.0, slots=er_slots),
                    torch_skip,
                )
            ]
            if er_slots
            else []
        ),
        LearnerSpec(
            "avalanche-slda (transcribed)",
            "torch",
            lambda d, c, s: AvalancheSLDA(d, c),
            torch_skip,
            max_dim=256,
            note="pinverse of Σ on every predict after an update",
        ),
    ]
    river_skip = None if has["river"] else INSTALL_HINT
    if has["river"]:
        from river import linear_model, naive_bayes, neighbors, tree
    specs += [
        LearnerSpec(
            "river SoftmaxRegression",
            "river",
            _river(lambda: linear_model.SoftmaxRegression()),
            river_skip,
        ),
        LearnerSpec(
            "river GaussianNB", "river", _river(lambda: naive_bayes.GaussianNB()), river_skip
        ),
        LearnerSpec(
            "river KNN (k=5, window 1000)",
            "river",
            _river(
                lambda: neighbors.KNNClassifier(
                    n_neighbors=5, engine=neighbors.LazySearch(window_size=SLOTS)
                )
            ),
            river_skip,
            max_dim=256,
            note="brute-force search over 1000 stored dicts per predict",
        ),
        LearnerSpec(
            "river HoeffdingTree",
            "river",
            _river(lambda: tree.HoeffdingTreeClassifier()),
            river_skip,
        ),
    ]
    sk_skip = None if has["sklearn"] else INSTALL_HINT
    if has["sklearn"]:
        from sklearn.linear_model import Perceptron, SGDClassifier
    specs += [
        LearnerSpec(
            "sklearn SGDClassifier(log_loss)",
            "sklearn",
            _sklearn(lambda seed: SGDClassifier(loss="log_loss", random_state=seed)),
            sk_skip,
        ),
        LearnerSpec(
            "sklearn Perceptron",
            "sklearn",
            _sklearn(lambda seed: Perceptron(random_state=seed)),
            sk_skip,
        ),
    ]
    return specs
