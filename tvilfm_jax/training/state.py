"""The training state: one pytree of arrays, everything a resumed run needs besides the input.

The model and the optimizer are not in it (they are static functions the step closes over), so
the state saves and restores as plain arrays and can be placed on a mesh leaf by leaf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Attributes:
      step: int32 [] number of optimizer steps taken (= index of the next global batch).
      params: model parameters (fp32), the `params` collection of `TVILFM`.
      batch_stats: BN running statistics (fp32).
      opt_state: optax state of `optim.build_optimizer` (frozen groups hold no moments).
      rng: uint32 [2] raw key data; split once per step and handed to the model as its
        "dropout" stream. The current model draws nothing, so this only fixes, in the
        checkpoint, the stream a stochastic layer would use.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    def variables(self) -> dict:
        """{"params", "batch_stats"}: what `TVILFM.apply` and the variables checkpoints take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_state(variables: Mapping[str, Any], tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A step-0 state from model variables ({"params", "batch_stats"}); traceable under jit."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )
