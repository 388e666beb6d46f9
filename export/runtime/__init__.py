"""What the service runs a bundle with, by concern:

- ``loaded``: a bundle read into typed arrays, cross-checked, with its indexes and models
  (``load_bundle``), the one object the service asks for;
- ``index``: the FAISS indexes as served (GPU copy behind one lock) and the core's searcher;
- ``sessions``: the ONNX text encoder and score head;
- ``parity``: the ONNX models against the export's references (``verify_bundle``);
- ``hardware``: CPUs, FAISS GPUs and onnxruntime providers, detected once.

onnxruntime, tokenizers, faiss and numpy only (import-linter checks it). The export step
checks its parity figures with these same classes, so what is measured at export is what
runs in production.
"""

from export.runtime.hardware import (
    DevicePreference,
    faiss_gpu_count,
    onnx_providers,
    usable_cpus,
)
from export.runtime.index import GPU_MAX_K, ServedIndex, ServedIndexes, load_index, search
from export.runtime.loaded import LoadedBundle, LoadOptions, load_bundle
from export.runtime.parity import (
    PARITY_TOLERANCES,
    ParityError,
    check_parity,
    cosine_rows,
    verify_bundle,
)
from export.runtime.sessions import OnnxHead, OnnxTextEncoder, load_tokenizer, make_session

__all__ = [
    "GPU_MAX_K",
    "PARITY_TOLERANCES",
    "DevicePreference",
    "LoadOptions",
    "LoadedBundle",
    "OnnxHead",
    "OnnxTextEncoder",
    "ParityError",
    "ServedIndex",
    "ServedIndexes",
    "check_parity",
    "cosine_rows",
    "faiss_gpu_count",
    "load_bundle",
    "load_index",
    "load_tokenizer",
    "make_session",
    "onnx_providers",
    "search",
    "usable_cpus",
    "verify_bundle",
]
