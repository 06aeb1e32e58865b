"""Epsilon-prediction network of the diffusion policy: an MLP over (noisy action, time embedding, condition)."""

import itertools
import math
from collections.abc import Callable

import torch as th
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """
    Sinusoidal embedding of the denoising step (Vaswani et al., 2017; Ho et al., 2020).

    :param dim: Embedding size (even)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time_embed_dim must be an even int >= 2, got {dim!r}")
        half = dim // 2
        frequencies = th.exp(-math.log(10_000) * th.arange(half, dtype=th.float32) / max(half - 1, 1))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, timesteps: th.Tensor) -> th.Tensor:
        """
        :param timesteps: Steps, shape ``(batch,)``
        :return: Embeddings, shape ``(batch, dim)``
        """
        angles = timesteps.float()[:, None] * self.frequencies[None]  # type: ignore[index]
        return th.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """
    Pre-activation two-layer residual block ``x + W2 act(W1 act(x))``.

    :param width: Input and output size
    :param activation_fn: Activation class
    """

    def __init__(self, width: int, activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(activation_fn(), nn.Linear(width, width), activation_fn(), nn.Linear(width, width))

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


class DenoiserMLP(nn.Module):
    """
    Epsilon-prediction MLP ``eps_theta(x_k, k, c)`` on the noisy action ``x_k``, a sinusoidal embedding of ``k`` passed
    through a small MLP, and the conditioning features ``c`` (the observation's latent).

    The first layer acting on the concatenation ``[x_k, emb(k), c]`` is split in three linear maps whose sum is the
    same function; the part that depends on ``c`` alone is computed once per chain by :meth:`project_condition`
    rather than once per denoising step.

    :param action_dim: Size of the denoised vector
    :param cond_dim: Size of the conditioning features
    :param hidden_sizes: Hidden layer sizes (all equal when ``residual`` is set)
    :param activation_fn: Activation class
    :param time_embed_dim: Size of the time embedding (even)
    :param residual: Use residual blocks (two layers per block, so the number of hidden layers must be odd: one input
        layer followed by pairs)
    """

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        hidden_sizes: list[int] | tuple[int, ...] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
        time_embed_dim: int = 16,
        residual: bool = False,
    ) -> None:
        super().__init__()
        check_denoiser_sizes(hidden_sizes, residual)
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(time_embed_dim),
            nn.Linear(time_embed_dim, 2 * time_embed_dim),
            activation_fn(),
            nn.Linear(2 * time_embed_dim, time_embed_dim),
        )
        width = hidden_sizes[0]
        self.input_x = nn.Linear(action_dim, width, bias=False)
        self.input_t = nn.Linear(time_embed_dim, width, bias=False)
        self.input_c = nn.Linear(cond_dim, width)
        layers: list[nn.Module] = []
        if residual:
            layers += [ResidualBlock(width, activation_fn) for _ in range((len(hidden_sizes) - 1) // 2)]
            layers.append(activation_fn())
        else:
            layers.append(activation_fn())
            for size_in, size_out in itertools.pairwise(hidden_sizes):
                layers += [nn.Linear(size_in, size_out), activation_fn()]
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(hidden_sizes[-1], action_dim)

    def project_condition(self, cond: th.Tensor) -> th.Tensor:
        """
        :param cond: Conditioning features, shape ``(batch, cond_dim)``
        :return: Their contribution to the first hidden layer, to pass to :meth:`forward`
        """
        return self.input_c(cond)

    def time_projections(self, n_steps: int) -> th.Tensor:
        """
        The time embedding's contribution to the first hidden layer for every step at once, so that a chain pays for
        the time MLP once rather than once per step.

        :param n_steps: Number of denoising steps K
        :return: Shape ``(K, width)``; row ``k - 1`` belongs to step ``k``
        """
        steps = th.arange(1, n_steps + 1, device=self.input_t.weight.device)
        return self.input_t(self.time_mlp(steps))

    def step_predictor(
        self, cond_projection: th.Tensor, n_steps: int, time_projections: th.Tensor | None = None
    ) -> Callable[[th.Tensor, int], th.Tensor]:
        """
        The noise prediction of every step of one chain, ``eps_model(x_k, k)``, with what does not depend on ``x_k``
        computed once: the first-layer bias of each step (condition + time projections, one tensor operation) and the
        transposed weights. The linear layers then run as single ``addmm`` calls, which on small batches halves the
        operations, and the autograd nodes, of each step (per-operation overhead dominates there). Same function as
        :meth:`forward`.

        :param cond_projection: Output of :meth:`project_condition`, shape ``(batch, width)``
        :param n_steps: Number of denoising steps K
        :param time_projections: Output of :meth:`time_projections` if the caller already has it (computed here if
            ``None``)
        :return: ``eps_model(x_k, k)`` for ``k`` in ``1..K``
        """
        if time_projections is None:
            time_projections = self.time_projections(n_steps)
        biases = (cond_projection[:, None] + time_projections).unbind(1)
        weight_x = self.input_x.weight.T
        layers = [_addmm_layer(m) if isinstance(m, nn.Linear) else m for m in (*self.body, self.output)]

        def eps_model(x: th.Tensor, k: int) -> th.Tensor:
            hidden = th.addmm(biases[k - 1], x, weight_x)
            for layer in layers:
                hidden = layer(hidden)
            return hidden

        return eps_model

    def forward(self, x: th.Tensor, timesteps: int | th.Tensor, cond_projection: th.Tensor) -> th.Tensor:
        """
        :param x: Noisy actions, shape ``(batch, action_dim)``
        :param timesteps: Denoising step: an int shared by the batch, or a tensor of shape ``(batch,)``
        :param cond_projection: Output of :meth:`project_condition`
        :return: Predicted noise, shape ``(batch, action_dim)``
        """
        if isinstance(timesteps, int):
            # One embedding row broadcast over the batch: the chain always denoises a whole batch at the same step.
            timesteps = th.full((1,), timesteps, device=x.device)
        hidden = self.input_x(x) + self.input_t(self.time_mlp(timesteps)) + cond_projection
        return self.output(self.body(hidden))


def _addmm_layer(linear: nn.Linear) -> Callable[[th.Tensor], th.Tensor]:
    """:return: ``linear`` as one ``addmm`` with its weight transposed once (``F.linear`` transposes on every call)."""
    weight_t, bias = linear.weight.T, linear.bias
    if bias is None:
        return lambda hidden: hidden @ weight_t
    return lambda hidden: th.addmm(bias, hidden, weight_t)


def check_denoiser_sizes(hidden_sizes: list[int] | tuple[int, ...], residual: bool) -> None:
    """
    :param hidden_sizes: Hidden layer sizes
    :param residual: Whether residual blocks are used
    :raises ValueError: if the sizes are not a non-empty list of positive ints compatible with ``residual``
    """
    if len(hidden_sizes) == 0 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in hidden_sizes):
        raise ValueError(f"denoiser_hidden_sizes must be a non-empty list of ints > 0, got {hidden_sizes!r}")
    if residual and (len(set(hidden_sizes)) != 1 or len(hidden_sizes) % 2 == 0):
        raise ValueError(
            "with residual=True, denoiser_hidden_sizes must be an odd number of equal sizes "
            f"(an input layer then pairs of layers per residual block), got {hidden_sizes!r}"
        )
