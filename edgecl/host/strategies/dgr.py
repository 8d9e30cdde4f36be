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
  inputs. edgecl inputs are normalised (``(x − mean)/std``), not pixels in
  [0, 1], so the decoder's output is the mean of a Gaussian in the model's own
  input space, with one shared variance set to its optimum, the batch's mean
  squared error (the calibrated "σ-VAE" of Rybkin, Daniilidis & Levine 2021):
  the loss ``D/2 · log MSE + KL`` does not depend on how the inputs are scaled,
  where a fixed unit variance would let normalised data be explained as noise
  (posterior collapse). Samples are the decoded means clipped to the
  per-feature min/max of the training inputs seen so far.
* **When it trains**: in :meth:`DGR.after_task`, ``vae_epochs`` passes over
  the task's data, each batch joined by as many samples of the previous
  generator (a frozen copy), weighted ``1/t`` (new) and ``(t−1)/t`` (replayed)
  after ``t`` tasks, as in the paper. The classifier is untouched there.
* **Classifier replay**: the loop's loss is hard-label cross-entropy, so replay
  is :meth:`DGR.penalty`: for every batch of task ``t > 1`` (1-based),
  ``replay_batch`` samples (default: the batch size) are generated, the
  previous model gives soft targets, and the term is
  ``w · T² · KL(softmax(z_old/T) ‖ softmax(z_new/T))``; ``w = t − 1`` by default,
  which is the paper's ``1/t`` current vs ``(t−1)/t`` replay weighting
  rescaled so the current loss keeps weight 1 (``replay_weight`` fixes ``w``).
* **Classes distilled**: the soft targets span the classes of all previous
  tasks (every output in domain-IL). In class-IL the current task's classes
  join the new model's softmax with target probability 0, as in van de Ven's
  code, so replayed inputs are also kept away from the new classes (without
  that, the new task's cross-entropy pushes every input to the new classes and
  class-IL forgets as fine-tuning does). A generated sample has no task id, so
  in task-IL its assumed task is "all previous tasks": the softmax spans their
  classes together, and the current task's are left out as its mask would.

The replayed samples pass through the training model in training mode, so
BatchNorm sees them as it would in the paper's mixed batches. Under torchrun
each process trains its own generator on its shard (the classifier replicas
still agree: DDP averages their gradients).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["DGR", "VAE"]


class VAE(nn.Module):
    """A Gaussian-output MLP VAE on flattened inputs of shape ``in_shape``.

    >>> v = VAE((2, 3), latent=4, hidden=8)
    >>> tuple(v.decode(torch.zeros(5, 4)).shape)
    (5, 2, 3)
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

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)``, shaped like the inputs."""
        return self.decoder(z).reshape(len(z), *self.in_shape)

    def terms(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared reconstruction error (per feature) and mean KL per sample of ``x``.

        ``noise`` ~ N(0, I), ``(N, latent)``, is the reparameterisation noise.
        """
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * noise
        mse = ((self.decode(z) - x) ** 2).mean()
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return mse, kl

    def nelbo(self, mse: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per sample at the optimal shared variance σ² = ``mse`` (constants dropped).

        One σ for all the data the batch mixes (new and replayed): a σ per part
        would weigh each part by the inverse of its error, starving the new task.
        """
        return 0.5 * math.prod(self.in_shape) * torch.log(mse.clamp_min(1e-8)) + kl


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

    def _train_vae(self, task: TaskView, old_vae: VAE | None) -> None:
        vae = self.vae_
        vae.train()
        opt = torch.optim.Adam(vae.parameters(), lr=self.vae_lr)
        t = self._tasks_done + 1  # tasks learned once this one is
        for _ in range(self.vae_epochs):
            for x, _, _ in task.batches():
                x = x.detach().float()
                mse, kl = vae.terms(x, self._noise(len(x), x.device))
                if old_vae is not None:
                    replayed = self.sample(len(x), old_vae)
                    mse_r, kl_r = vae.terms(replayed, self._noise(len(x), x.device))
                    mse, kl = (mse + (t - 1) * mse_r) / t, (kl + (t - 1) * kl_r) / t
                loss = vae.nelbo(mse, kl)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        vae.eval()

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        if self.old_model_ is None:
            return None
        w = self._tasks_done if self.replay_weight is None else self.replay_weight
        if w == 0:
            return None
        xg = self.sample(len(x) if self.replay_batch is None else self.replay_batch)
        t = self.temperature
        seen = torch.tensor(self._seen, device=xg.device)
        with torch.no_grad():
            p = torch.softmax(self.old_model_(xg).float().index_select(1, seen) / t, dim=1)
            p = nn.functional.pad(p, (0, len(self._cols) - len(self._seen)))  # new classes: 0
        cols = torch.tensor(self._cols, device=xg.device)
        log_q = torch.log_softmax(model(xg.to(x.dtype)).float().index_select(1, cols) / t, dim=1)
        kl = (torch.special.xlogy(p, p) - p * log_q).sum(dim=1).mean()
        return w * t * t * kl

    def report(self) -> dict[str, object]:
        n = 0 if self.vae_ is None else sum(p.numel() for p in self.vae_.parameters())
        return {"generator_params": n}


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
