"""Enter cnnkit from TensorFlow / Keras and torchvision: layout converters, readers, and `import_weights`.

One job per module: `layouts` (TF -> PyTorch tensor layouts), `keras_file` (what Keras 3 writes, with size
caps), `graph` / `keras_graph` / `traced` (both models as paired op sequences), `keras_load` (checked copying),
`torch_state` (cnnkit and torchvision state dicts), `importer` (the checkpoint, with the stated input).
"""

from cnnkit.interop.importer import ImportOptions, import_weights
from cnnkit.interop.keras_file import read_keras
from cnnkit.interop.keras_load import load_keras
from cnnkit.interop.layouts import conv_kernel_from_tf, dense_kernel_from_tf, keras_momentum_to_torch
from cnnkit.interop.torch_state import read_torch_state

__all__ = ["ImportOptions", "conv_kernel_from_tf", "dense_kernel_from_tf", "import_weights", "keras_momentum_to_torch",
           "load_keras", "read_keras", "read_torch_state"]
