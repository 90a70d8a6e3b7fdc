"""distillab: config-driven compression of causal language models."""

import logging as _logging

# transformers imports torchao (if installed) at import time. On a CPU-only machine torchao warns
# that its CUDA kernels (.so) cannot load and torch warns about its Enum registrations: harmless
# noise on every command's stderr that would bury the one-line errors users should see.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
