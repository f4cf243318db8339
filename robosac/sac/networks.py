"""Networks for SAC: observation encoder, tanh-Gaussian actor, twin critics as one ensemble.

Shapes: B = batch, S = state dim, A = action dim, F = feature dim, (C, H, W) = image channels
(frame stack included), height and width in pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robosac.sac.spaces import ObsSpec

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, batch_norm: bool = False) -> nn.Sequential:
    """Linear -> ReLU per hidden layer; ``batch_norm`` puts a BatchRenorm in front of every Linear (CrossQ)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [*([BatchRenorm(in_dim)] if batch_norm else []), nn.Linear(in_dim, h), nn.ReLU(inplace=True)]
        in_dim = h
    layers += [*([BatchRenorm(in_dim)] if batch_norm else []), nn.Linear(in_dim, out_dim)]
    return nn.Sequential(*layers)


class BatchRenorm(nn.Module):
    """Batch renormalisation (Ioffe 2017, arXiv 1702.03275) over the batch axis (-2) of (..., B, H).

    CrossQ's normaliser (Bhatt et al. 2024, arXiv 1902.05605). With batch statistics (training):
    plain batch norm for the first ``warmup`` passes, then the batch is normalised towards the
    running statistics, x_hat = (x - mean_B) / std_B * r + d with r = std_B / std_run clipped to
    [1/3, 3] and d = (mean_B - mean_run) / std_run clipped to [-5, 5] (no gradient through r, d),
    which keeps one odd batch from moving the output far; the running statistics follow each batch
    at rate ``momentum``. Without batch statistics (acting, targets): the running statistics.
    ``lead`` is the parameters' leading shape: (N,) for an ensemble of N networks on (N, B, H).
    """

    def __init__(self, dim: int, lead: tuple[int, ...] = (), momentum: float = 0.01, eps: float = 1e-3, warmup: int = 100_000):
        super().__init__()
        shape = (*lead, dim)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))  # training passes seen
        self.momentum, self.eps, self.warmup = momentum, eps, warmup

    def forward(self, x: torch.Tensor, batch_stats: bool | None = None, frozen: bool = False) -> torch.Tensor:
        """``batch_stats`` defaults to the module's training mode; ``frozen`` detaches the affine
        parameters (gradients reach the input only)."""
        weight, bias = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        if not (self.training if batch_stats is None else batch_stats):
            x_hat = (x - self.running_mean.unsqueeze(-2)) * torch.rsqrt(self.running_var.unsqueeze(-2) + self.eps)
            return x_hat * weight.unsqueeze(-2) + bias.unsqueeze(-2)
        var, mean = torch.var_mean(x, -2, unbiased=False)
        std = (var + self.eps).sqrt()
        x_hat = (x - mean.unsqueeze(-2)) / std.unsqueeze(-2)
        with torch.no_grad():  # r and d carry no gradient
            renorm = bool(self.passes >= self.warmup)
            if renorm:
                run_std = (self.running_var + self.eps).sqrt()
                r = (std / run_std).clamp(1 / 3, 3)
                d = ((mean - self.running_mean) / run_std).clamp(-5, 5)
            n = x.shape[-2]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            self.passes += 1
        if renorm:
            x_hat = x_hat * r.unsqueeze(-2) + d.unsqueeze(-2)
        return x_hat * weight.unsqueeze(-2) + bias.unsqueeze(-2)


class PixelEncoder(nn.Module):
    """Images (B, C, H, W), values 0-255 -> features (B, F).

    Three 3x3 convs with strides 2, 2, 1, then Linear -> LayerNorm -> tanh (as in DrQ). Sized to
    keep up with a 20 Hz robot on a 2-core CPU (BENCHMARKS.md): the strides shrink the maps early,
    16 filters in the first layer halve the cost of its weight gradient (the slowest kernel), and
    channels-last memory is the layout oneDNN's CPU convolutions run fastest on (2.5x here).
    """

    def __init__(self, chw: tuple[int, int, int], feature_dim: int = 50, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        c, h, w = chw
        layers: list[nn.Module] = []
        for out, stride in zip(channels, (2, 2, 1)):
            layers += [nn.Conv2d(c, out, 3, stride=stride), nn.ReLU(inplace=True)]
            c = out
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, chw[0], h, w)).shape[1]
        self.head = nn.Sequential(nn.Linear(n_flat, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.feature_dim = feature_dim
        self.to(memory_format=torch.channels_last)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: uint8 or float with values in 0-255 (augmentation hands over floats)."""
        x = pixels.contiguous(memory_format=torch.channels_last).float()
        # The input scaling x / 255 - 0.5 is folded into the first conv (exact: it is linear and
        # unpadded), so the full-size image is not rewritten twice on every pass.
        first = self.convs[0]
        weight = first.weight * (1.0 / 255.0)
        bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))
        x = F.conv2d(x, weight, bias, stride=first.stride)
        return self.head(self.convs[1:](x))


class PixelDecoder(nn.Module):
    """Image features (B, F) -> images (B, C, H, W) scaled as the encoder sees them (x / 255 - 0.5).

    SAC-AE's decoder (Yarats et al. 2019, arXiv 1910.01741), mirrored on ``PixelEncoder``: Linear to
    the last conv's maps, then transposed 3x3 convs with strides 1, 2, 2 (output padding where the
    encoder's floor division dropped a row), ReLU between them. It gives the encoder a learning
    signal from every pixel, not only from the critic's TD error.
    """

    def __init__(self, chw: tuple[int, int, int], feature_dim: int = 50, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        c, h, w = chw
        sizes = [(h, w)]
        for stride in (2, 2, 1):
            sizes.append(((sizes[-1][0] - 3) // stride + 1, (sizes[-1][1] - 3) // stride + 1))
        self.maps = (channels[-1], *sizes[-1])
        self.fc = nn.Linear(feature_dim, math.prod(self.maps))
        layers: list[nn.Module] = []
        outs = (*channels[::-1][1:], c)
        for i, (cin, cout, stride) in enumerate(zip(channels[::-1], outs, (1, 2, 2))):
            (hi, wi), (ho, wo) = sizes[3 - i], sizes[2 - i]
            pad = (ho - ((hi - 1) * stride + 3), wo - ((wi - 1) * stride + 3))
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=stride, output_padding=pad))
            if i < 2:
                layers.append(nn.ReLU(inplace=True))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), channels-last like the shifted frames they are compared with.

        Channels-last activations take oneDNN's faster kernels (BENCHMARKS.md); the weights stay
        channels-first, so the gradients, Adam's moments and checkpoints keep one layout (fused
        Adam reads a channels-last weight's moments in the wrong order if those are channels-first).
        """
        x = F.relu(self.fc(feat)).view(-1, *self.maps).contiguous(memory_format=torch.channels_last)
        return self.deconvs(x)


class ObsEncoder(nn.Module):
    """Canonical observation dict -> features (B, F): image features (if any) then the state vector.

    The canonical dict has ``"state"`` float32 (B, S) and/or ``"pixels"`` uint8 (B, C, H, W).
    Only the image part has parameters; state passes through unchanged.
    """

    def __init__(self, spec: ObsSpec, feature_dim: int = 50, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        self.pixels = PixelEncoder(spec.image.chw, feature_dim, channels) if spec.image else None
        self.has_state = spec.state_dim > 0
        self.out_dim = spec.state_dim + (self.pixels.feature_dim if self.pixels else 0)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.pixels is None:
            return obs["state"]
        feat = self.pixels(obs["pixels"])
        return torch.cat([feat, obs["state"]], dim=-1) if self.has_state else feat


class Actor(nn.Module):
    """Features (B, F) -> tanh-squashed Gaussian over actions in [-1, 1]^A."""

    def __init__(self, in_dim: int, act_dim: int, hidden: tuple[int, ...], batch_norm: bool = False):
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * act_dim, batch_norm)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mean (B, A) and log std (B, A) of the pre-tanh Gaussian."""
        mean, log_std = self.net(feat).chunk(2, dim=-1)
        # A smooth bound keeps the std's gradient alive at the limits (unlike clamp).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mean, log_std

    def sample(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample a = tanh(u), u ~ N(mean, std); returns a (B, A) and log pi(a) (B,).

        log pi(a) = log N(u; mean, std) - sum log(1 - tanh(u)^2), with
        log N = -noise^2/2 - log std - log(2 pi)/2 (noise = (u - mean)/std) and
        log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), which stays finite where
        1 - tanh(u)^2 underflows to 0. Constants are summed once, outside the per-element terms.
        """
        mean, log_std = self(feat)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        per_dim = 2.0 * (u + F.softplus(-2.0 * u)) - 0.5 * noise.pow(2) - log_std
        const = mean.shape[-1] * (0.5 * math.log(2 * math.pi) + 2.0 * math.log(2.0))
        return torch.tanh(u), per_dim.sum(-1) - const

    def mode(self, feat: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(mean), (B, A)."""
        return torch.tanh(self(feat)[0])


class EnsembleLinear(nn.Module):
    """Weights of N independent linear layers, applied as one batched matmul (N, B, in) -> (N, B, out)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))


class TwinCritic(nn.Module):
    """Q_1..Q_N(features, action) as one ensemble: (B, F), (B, A) -> (N, B), N = 2 by default.

    One batched matmul per layer for both critics halves the kernel launches of two separate MLPs,
    which is most of the cost of a 256-wide update on a CPU. ``dropout`` > 0 and ``layer_norm`` give
    DroQ's critic (Hiraoka et al. 2022, arXiv 2110.02034): Linear -> Dropout -> LayerNorm -> ReLU in
    every hidden layer, which keeps Q estimates in check when the critic takes many updates per
    env step. Dropout is on in every pass (targets and the actor's loss too), as in DroQ.
    ``batch_norm`` gives CrossQ's critic: a BatchRenorm in front of every layer, with batch
    statistics in training passes and running statistics in frozen ones (the actor's loss).
    """

    def __init__(self, in_dim: int, act_dim: int, hidden: tuple[int, ...], n: int = 2, dropout: float = 0.0, layer_norm: bool = False,
                 batch_norm: bool = False):
        super().__init__()
        dims = (in_dim + act_dim, *hidden, 1)
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.batch_norms = nn.ModuleList(BatchRenorm(d, (n,)) for d in dims[:-1]) if batch_norm else None
        # Per-member LayerNorm gain and bias, (N, 1, H) per hidden layer.
        self.norm_weight = nn.ParameterList(nn.Parameter(torch.ones(n, 1, h)) for h in hidden) if layer_norm else None
        self.norm_bias = nn.ParameterList(nn.Parameter(torch.zeros(n, 1, h)) for h in hidden) if layer_norm else None
        self.n = n
        self.dropout = float(dropout)

    def forward(self, feat: torch.Tensor, action: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Q values (N, B). ``frozen``: use detached weights, so gradients reach the inputs only
        (the actor's loss must not train the critic)."""
        x = torch.cat([feat, action], dim=-1).unsqueeze(0).expand(self.n, -1, -1)
        last = len(self.layers) - 1

        def param(p: torch.Tensor) -> torch.Tensor:
            return p.detach() if frozen else p

        for i, layer in enumerate(self.layers):
            if self.batch_norms is not None:
                x = self.batch_norms[i](x, batch_stats=self.training and not frozen, frozen=frozen)
            x = torch.baddbmm(param(layer.bias), x, param(layer.weight))
            if i < last:
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, training=True)
                if self.norm_weight is not None:
                    x = torch.addcmul(param(self.norm_bias[i]), F.layer_norm(x, x.shape[-1:]), param(self.norm_weight[i]))
                x = F.relu_(x)  # in place: neither baddbmm nor addcmul needs its output for backward
        return x.squeeze(-1)
