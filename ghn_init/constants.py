"""Numbers and names that several modules share, defined once.

The default GHN of ``apply``/``load_ghn`` is :data:`ghn_init.hub.registry.DEFAULT_GHN`, next to the
registry entries it names.
"""

from __future__ import annotations

#: Virtual edges join nodes up to this many hops apart; their weight is the path length (GHN-2, Sec. 4.1;
#: ``ppuda`` uses 50). GHNs whose config has ``virtual_edges=False`` trace graphs with a cutoff of 1.
VIRTUAL_EDGE_CUTOFF = 50

#: Side of the square image a model is recorded with when neither the model nor the caller says
#: (torchvision's ImageNet size; timm models carry their own in ``pretrained_cfg``).
DEFAULT_IMAGE_SIDE = 224

#: Inception-v3 expects 299 x 299 images.
INCEPTION_IMAGE_SIDE = 299

#: The most memory the zero inputs of a *real* forward pass (the recording fallback for models that cannot run on
#: meta or fake tensors) may take; a larger input size is refused before anything is allocated (it was an
#: out-of-memory error, or the process was killed). Recording on meta or fake tensors allocates nothing, at any size.
MAX_REAL_INPUT_BYTES = 2**30

#: Files of a GHN folder (written by ``ghn-init convert`` and by training, read by ``load_ghn``).
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"

#: Files of a training run folder.
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"

#: The ``hf://`` URL scheme of Hugging Face Hub sources.
HF_SCHEME = "hf://"
