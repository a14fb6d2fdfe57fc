"""Developer tool: the tensor names and shapes of the published Mimi checkpoint.

Run it in a scratch virtualenv that has PyTorch and the PyTorch ``moshi``
package (``pip install torch numpy einops safetensors sentencepiece
huggingface_hub && pip install --no-deps moshi``), never in xswarm's own
environment: xswarm does not depend on torch. It builds Mimi with
``moshi.models.loaders.get_mimi(None)`` (random weights, no download), applies
the renaming that turns a PyTorch ``moshi`` state dict into the published
checkpoint's naming (``self_attn.in_projs.0.weight`` -> ``in_proj_weight``,
``self_attn.out_projs.0.weight`` -> ``out_proj.weight``; see
/work/shared/FACTS.md), and prints ``{name: [shape...]}`` as JSON, sorted.

The committed output, tests/data/mimi_pytorch_manifest.json, lets the tests
check that xswarm's generated full-size Mimi (xswarm.models.mimi) has exactly
the published names and shapes, without torch.

    python tools/mimi_manifest.py > tests/data/mimi_pytorch_manifest.json
"""

from __future__ import annotations

import json
import sys


def published_name(name: str) -> str:
    """A PyTorch ``moshi`` Mimi state-dict name in the published checkpoint's spelling."""
    return name.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight").replace(
        "self_attn.out_projs.0.weight", "self_attn.out_proj.weight"
    )


def main() -> None:
    from moshi.models import loaders

    mimi = loaders.get_mimi(None, device="cpu")
    manifest = {
        published_name(name): list(tensor.shape) for name, tensor in mimi.state_dict().items()
    }
    json.dump(dict(sorted(manifest.items())), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
