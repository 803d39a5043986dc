"""Open-MAGVIT2 video tokenizer: model and presets, lookup-free quantizer, checkpoint I/O.

    from shared.magvit import MagvitTokenizer, tokenizer_config, load_tokenizer
    tok = load_tokenizer("hf://TencentARC/Open-MAGVIT2-Tokenizer-262144-Video/video_128_262144.ckpt")
    codes, indices = tok.encode(video)  # video (B, 3, T, H, W) in [-1, 1]
    frames = tok.decode(codes)
"""

from shared.magvit.io import checkpoint_sha256, load_tokenizer, save_tokenizer
from shared.magvit.lfq import LFQ, LFQOutput, codes_to_indices, indices_to_codes
from shared.magvit.model import (
    TOKENIZER_CONFIGS,
    MagvitConfig,
    MagvitTokenizer,
    TokenizerOutput,
    tokenizer_config,
)

__all__ = [
    "LFQ",
    "LFQOutput",
    "MagvitConfig",
    "MagvitTokenizer",
    "TOKENIZER_CONFIGS",
    "TokenizerOutput",
    "checkpoint_sha256",
    "codes_to_indices",
    "indices_to_codes",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_config",
]
