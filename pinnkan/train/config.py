"""`TrainConfig`: the budget, sampling and optimizer of one training run, with the CLI's
defaults (`train:` and the default `optim=`), validated in one place (`validate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pinnkan.common.config_checks import as_choice, as_float, as_int
from pinnkan.errors import FieldError, PinnkanError
from pinnkan.network.derivatives import ENGINES
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.optimizers import DEFAULT_OPTIMIZER, get_optimizer
from pinnkan.train.options import TrainOptions, stage_value

LR_UNUSED = 0.01  # the lr of an optimizer that takes none (lm): valid, never read
MAX_LR = 10.0  # no PINN trains with a larger Adam step; far below float32 overflow

_TRAIN = TrainOptions()  # the library's defaults are the CLI's (pinnkan.run.config)


@dataclass
class TrainConfig:
    """Budget and sampling of one training run; validated (and normalised) by `validate`.
    Every default is the CLI's: `train:` (TrainOptions) and the default `optim=`."""

    steps: int | None = None  # None: the optimizer's default for a pretrain (optim.steps)
    lbfgs_steps: int = 0
    lr: float | None = None  # None: the optimizer's pretrain lr (adam / gd; lm takes none)
    lr_decay: float = 0.1  # lr falls exponentially to lr·lr_decay over the Adam steps
    n_interior: int = _TRAIN.n_interior
    n_boundary: int = _TRAIN.n_boundary
    derivatives: str = _TRAIN.derivatives
    compile: bool = _TRAIN.compile  # torch.compile the forward engine's loss
    eval_every: int = _TRAIN.eval_every
    log_every: int = _TRAIN.log_every
    progress: str = _TRAIN.progress  # auto (bar on a terminal, log lines otherwise) | bar | ...
    checkpoint_every: int = _TRAIN.checkpoint_every  # resumable state every N steps (0: never)
    optimizer: str = DEFAULT_OPTIMIZER  # adam | gd (then optional L-BFGS) | lm
    lm: LMConfig = field(default_factory=LMConfig)
    max_seconds: float = _TRAIN.max_seconds  # stop once training has taken this long (0: none)
    tol: float = _TRAIN.tol  # stop at held-out loss <= tol x the loss of u = 0 there (0: off)
    check_memory: bool = _TRAIN.check_memory  # refuse a step that cannot fit in free memory
    causal: float = _TRAIN.causal  # ε of the causal weighting in time (pinnkan.pinn.causal; 0: off)
    causal_slices: int = _TRAIN.causal_slices
    time_windows: int = _TRAIN.time_windows  # time marching in one network (optim=lm; 1: off)
    window_tol: float = _TRAIN.window_tol
    window_steps: int = _TRAIN.window_steps

    # set by `validate`: the stage validates once, `train` only what it was not given valid
    validated: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Unset steps / lr / lr_decay / lbfgs_steps take the optimizer's pretrain defaults."""
        try:
            default = get_optimizer(self.optimizer).options()
        except PinnkanError:
            return  # `validate` names the bad choice
        if self.steps is None:
            self.steps = stage_value(default.steps, "pretrain", "optim.steps")
        if self.lr is None:
            self.lr = stage_value(getattr(default, "lr", LR_UNUSED), "pretrain", "optim.lr")

    def validate(self) -> None:
        """Type and range of every field; one PinnkanError line naming the field."""
        optimizer = get_optimizer(self.optimizer)  # first: its defaults fill the rest
        for name, lo in (
            ("steps", 1),
            ("lbfgs_steps", 0),
            ("n_interior", 1),
            ("n_boundary", 1),
            ("eval_every", 1),
            ("log_every", 1),
            ("checkpoint_every", 0),
        ):
            setattr(self, name, as_int(getattr(self, name), name, lo))
        # above MAX_LR, Adam steps overflow float32 (1e38 crashed inside torch)
        self.lr = as_float(self.lr, "lr", 0.0, MAX_LR, lo_open=True)
        self.lr_decay = as_float(self.lr_decay, "lr_decay", 0.0, 1.0, lo_open=True)
        as_choice(self.derivatives, "derivatives", ENGINES)
        for name in ("compile", "check_memory"):
            if not isinstance(getattr(self, name), bool):
                raise FieldError(name, f"={getattr(self, name)!r} must be true or false")
        # a YAML boolean (Hydra turns `false` into "False" for this str field): on or off
        flag = str(self.progress).lower()
        self.progress = {"true": "auto", "false": "none"}.get(flag, self.progress)
        as_choice(self.progress, "progress", ("auto", "bar", "log", "none"))
        self.max_seconds = as_float(self.max_seconds, "max_seconds", 0.0)
        self.tol = as_float(self.tol, "tol", 0.0)
        self.causal = as_float(self.causal, "causal", 0.0)
        self.causal_slices = as_int(self.causal_slices, "causal_slices", 1)
        self.time_windows = as_int(self.time_windows, "time_windows", 1, 10_000)
        self.window_tol = as_float(self.window_tol, "window_tol", 0.0)
        self.window_steps = as_int(self.window_steps, "window_steps", 1)
        if self.time_windows > 1 and not optimizer.legs:
            raise FieldError(
                "time_windows",
                f"={self.time_windows} needs the lm optimizer (it opens the next window on LM's "
                f"own signals); with {self.optimizer}, use causal weighting",
            )
        try:
            self.lm.validate()
        except FieldError as exc:  # the LM options are this config's `lm`
            raise exc.renamed(f"lm.{exc.field}") from None
        self.validated = True
