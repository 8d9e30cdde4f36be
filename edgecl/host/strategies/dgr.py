"""Deep generative replay with distillation (Shin et al. 2017; van de Ven et al. 2020).

Shin, Lee, Kim & Kim 2017, "Continual Learning with Deep Generative Replay"
(NeurIPS): a generator learns the inputs of every task so far, and while a new
task trains, generated inputs labelled by the previous model are replayed.
As in "DGR + distillation" (van de Ven, Siegelmann & Tolias 2020, "Brain-inspired
replay for continual learning with artificial neural networks", Nat. Commun.;
van de Ven & Tolias 2019, "Three scenarios for continual learning") the labels
are the previous model's *soft* outputs at temperature ``T``.

Design, chosen to fit the loop's hooks:

* **Generator**: a VAE (Kingma & Welling 2014) with MLP encoder and decoder
  (two hidden layers of ``vae_hidden``, latent ``vae_latent``) on flattened
  inputs. edgecl inputs are normalised (``(x − mean)/std``; uint8 images land
  in [0, 1], IMU windows are standardised per channel), so the VAE rescales
  each feature from the min/max of the training inputs seen so far to [0, 1],
  reconstructs with a sigmoid and binary cross-entropy (the MNIST VAE of van de
  Ven et al.), and maps samples back: they have the data's shape and lie in its
  observed range (clipped once more against rounding). Trained on MNIST 0s
  and 1s for 10 epochs, 86 % of its samples were 0s or 1s to a reference
  classifier, against 56 % for a Gaussian decoder with an optimal shared
  variance (the σ-VAE of Rybkin et al. 2021) on the same inputs: blurry
  averages that the previous model labels arbitrarily.
* **When it trains**: in :meth:`DGR.after_task`, ``vae_epochs`` passes over
  the task's data, each batch joined by as many samples of the previous
  generator (a frozen copy), weighted ``1/t`` (new) and ``(t−1)/t`` (replayed)
  after ``t`` tasks, as in the paper. The classifier is untouched there.
* **Classifier replay**: the loop's loss is hard-label cross-entropy, so the
  soft targets enter through :meth:`DGR.penalty`. For every batch of task
  ``t > 1`` (1-based), :meth:`DGR.augment` appends ``replay_batch`` generated
  inputs (default: as many as the batch has) with the label −100, which
  ``cross_entropy`` ignores (its default ``ignore_index``), and keeps the
  previous model's soft targets for them; the penalty takes those rows of the
  loop's own logits and adds ``w · T² · KL(softmax(z_old/T) ‖ softmax(z_new/T))``.
  ``w = t − 1`` by default: the paper's ``1/t`` current vs ``(t−1)/t`` replay
  weighting, rescaled so the current loss keeps weight 1 (``replay_weight``
  fixes ``w``). One forward pass over the mixed batch matters with BatchNorm:
  a separate pass over generated inputs alone normalised them with their own
  batch statistics, and Split-MNIST class-IL fell from 0.86 to 0.78 (one seed,
  400-400 mlp, 10 epochs for both networks).
* **Classes distilled**: the soft targets span the classes of all previous
  tasks (every output in domain-IL). In class-IL the current task's classes
  join the new model's softmax with target probability 0, as in van de Ven's
  code, so replayed inputs are also kept away from the new classes (without
  that, the new task's cross-entropy pushes every input to the new classes and
  class-IL forgets as fine-tuning does). A generated sample has no task id, so
  in task-IL its assumed task is "all previous tasks": the softmax spans their
  classes together, and the current task's are left out as its mask would.

Under torchrun each process trains its own generator on its shard and
replays its own samples (the classifier replicas still agree: DDP averages
their gradients).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Batch, Strategy, TaskView

__all__ = ["DGR", "IGNORE", "VAE"]

#: Label of generated rows: ``cross_entropy`` skips it (its default ``ignore_index``).
IGNORE = -100


class VAE(nn.Module):
    """An MLP VAE on flattened inputs whose decoder's sigmoid spans the data range.

    Inputs are rescaled per feature from ``[low, high]`` (:meth:`set_range`) to
    [0, 1], where the reconstruction loss is the binary cross-entropy of the
    sigmoid output (as for MNIST pixels in van de Ven et al.); decoded samples
    are mapped back, so they lie in ``[low, high]`` by construction.

    >>> v = VAE((2, 3), latent=4, hidden=8)
    >>> v.set_range(torch.zeros(2, 3), torch.full((2, 3), 5.0))
    >>> x = v.decode(torch.randn(7, 4))
    >>> tuple(x.shape), bool(x.min() >= 0 and x.max() <= 5)
    ((7, 2, 3), True)
    """

    def __init__(self, in_shape: tuple[int, ...], latent: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.latent = int(latent)
        d = math.prod(self.in_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, d),
        )
        self.register_buffer("low", torch.zeros(self.in_shape))
        self.register_buffer("scale", torch.ones(self.in_shape))

    def set_range(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """The per-feature range of the data (a constant feature gets a tiny width)."""
        self.low.copy_(low)
        self.scale.copy_((high - low).clamp_min(1e-6))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` in the data's space, shaped like the inputs."""
        unit = torch.sigmoid(self.decoder(z)).reshape(len(z), *self.in_shape)
        return self.low + self.scale * unit

    def loss(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per sample, batch mean; ``noise`` ~ N(0, I) is ``(N, latent)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * noise
        target = ((x - self.low) / self.scale).clamp(0.0, 1.0).flatten(1)
        recon = nn.functional.binary_cross_entropy_with_logits(
            self.decoder(z), target, reduction="none"
        ).sum(dim=1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1)
        return (recon + kl).mean()


class DGR(Strategy):
    """Generative replay with a VAE and soft targets from the previous model.

    Parameters
    ----------
    temperature : float
        Softmax temperature ``T`` of the soft targets (2, as in the papers).
    replay_weight : float or None
        Weight ``w`` of the replay term; None: ``t − 1`` at task ``t`` (the paper's ratio).
    replay_batch : int or None
        Generated samples per batch (default: as many as the batch has).
    vae_latent, vae_hidden : int
        Latent size and width of the VAE's two hidden layers.
    vae_epochs : int
        Passes over each task's data that train the VAE.
    vae_lr : float
        Adam step size of the VAE.
    seed : int
        Seeds the VAE's noise and the generated samples.

    >>> DGR().penalty(None, torch.zeros(2, 3), None) is None  # nothing to replay yet
    True
    """

    name = "dgr"

    def __init__(
        self,
        temperature: float = 2.0,
        replay_weight: float | None = None,
        replay_batch: int | None = None,
        vae_latent: int = 32,
        vae_hidden: int = 256,
        vae_epochs: int = 10,
        vae_lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature = {temperature}: must be > 0")
        if replay_weight is not None and replay_weight < 0:
            raise ConfigError(f"replay_weight = {replay_weight}: must be >= 0")
        for name, v in (
            ("replay_batch", replay_batch),
            ("vae_latent", vae_latent),
            ("vae_hidden", vae_hidden),
            ("vae_epochs", vae_epochs),
        ):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ConfigError(f"{name} = {v!r}: must be an integer >= 1")
        if not vae_lr > 0:
            raise ConfigError(f"vae_lr = {vae_lr}: must be > 0")
        self.temperature = float(temperature)
        self.replay_weight = replay_weight
        self.replay_batch = replay_batch
        self.vae_latent = int(vae_latent)
        self.vae_hidden = int(vae_hidden)
        self.vae_epochs = int(vae_epochs)
        self.vae_lr = float(vae_lr)
        self._gen = torch.Generator().manual_seed(seed)
        self._tasks_done = 0
        self._seen: list[int] = []  # classes of the finished tasks: the soft targets' support
        self._cols: list[int] = []  # the new model's softmax on replayed inputs
        self._task = 0  # index of the task being learned (task ids of generated rows)
        self._targets: torch.Tensor | None = None  # soft targets of the rows augment() added
        self.vae_: VAE | None = None
        self.old_model_: nn.Module | None = None
        self.low_: torch.Tensor | None = None  # per-feature range of the inputs seen
        self.high_: torch.Tensor | None = None

    def _noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.vae_latent, generator=self._gen).to(device)

    @torch.no_grad()
    def sample(self, n: int, vae: VAE | None = None) -> torch.Tensor:
        """``n`` generated inputs, clipped to the range of the inputs seen so far."""
        vae = self.vae_ if vae is None else vae
        if vae is None:
            raise RuntimeError("no generator yet: sample() needs a finished task")
        x = vae.decode(self._noise(n, self.low_.device))
        return torch.maximum(torch.minimum(x, self.high_), self.low_)

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        old_vae = None if self.vae_ is None else copy.deepcopy(self.vae_).eval()
        for x, _, _ in task.batches():  # the range first: samples are clipped to it
            lo, hi = x.detach().float().amin(dim=0), x.detach().float().amax(dim=0)
            self.low_ = lo if self.low_ is None else torch.minimum(self.low_, lo)
            self.high_ = hi if self.high_ is None else torch.maximum(self.high_, hi)
        if self.vae_ is None:
            self.vae_ = VAE(tuple(self.low_.shape), self.vae_latent, self.vae_hidden)
            self.vae_.to(self.low_.device)
        self.vae_.set_range(self.low_, self.high_)
        self._train_vae(task, old_vae)
        self._tasks_done += 1
        self._seen = sorted(set(self._seen) | set(task.classes))
        self._cols = self._seen
        self.old_model_ = copy.deepcopy(_unwrap(model)).eval()
        for p in self.old_model_.parameters():
            p.requires_grad_(False)

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        new = [] if task.mask is not None else [c for c in task.classes if c not in self._seen]
        self._cols = [*self._seen, *new]  # class-IL: new classes get target 0 (module doc)
        self._task = task.index

    def _train_vae(self, task: TaskView, old_vae: VAE | None) -> None:
        vae = self.vae_
        vae.train()
        opt = torch.optim.Adam(vae.parameters(), lr=self.vae_lr)
        t = self._tasks_done + 1  # tasks learned once this one is
        for _ in range(self.vae_epochs):
            for x, _, _ in task.batches():
                x = x.detach().float()
                loss = vae.loss(x, self._noise(len(x), x.device))
                if old_vae is not None:  # the old generator's samples, in its own range
                    replayed = self.sample(len(x), old_vae)
                    rloss = vae.loss(replayed, self._noise(len(x), x.device))
                    loss = (loss + (t - 1) * rloss) / t
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        vae.eval()

    def augment(self, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> Batch:
        self._targets = None
        if self.old_model_ is None or self._weight() == 0:
            return x, y, tid
        xg = self.sample(len(x) if self.replay_batch is None else self.replay_batch).to(x.dtype)
        seen = torch.tensor(self._seen, device=xg.device)
        with torch.no_grad():
            z = self.old_model_(xg).float().index_select(1, seen)
            p = torch.softmax(z / self.temperature, dim=1)
        self._targets = nn.functional.pad(p, (0, len(self._cols) - len(self._seen)))  # new: 0
        return (
            torch.cat([x, xg]),
            torch.cat([y, y.new_full((len(xg),), IGNORE)]),
            torch.cat([tid, tid.new_full((len(xg),), self._task)]),
        )

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        p, self._targets = self._targets, None
        if p is None:
            return None
        t = self.temperature
        cols = torch.tensor(self._cols, device=logits.device)
        z = logits[len(logits) - len(p) :].float().index_select(1, cols)  # the generated rows
        log_q = torch.log_softmax(z / t, dim=1)
        kl = (torch.special.xlogy(p, p) - p * log_q).sum(dim=1).mean()
        return self._weight() * t * t * kl

    def _weight(self) -> float:
        return self._tasks_done if self.replay_weight is None else self.replay_weight

    def report(self) -> dict[str, object]:
        n = 0 if self.vae_ is None else sum(p.numel() for p in self.vae_.parameters())
        return {"generator_params": n}


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
