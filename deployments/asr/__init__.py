"""The ASR stage: Whisper on CTranslate2 behind a Transcribe gRPC stream."""

import os

# CTranslate2's CPU kernels are oneDNN's, which keeps up to 1024 compiled primitives, one
# per input shape; streaming decodes come in every length, so a replica grew ~60 MB per
# 100 decodes until the cache filled. 32 keeps it flat at no measured cost in speed. Set
# before CTranslate2 loads; an operator's own value wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
