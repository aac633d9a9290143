"""Network blocks shared by segqc's learned methods (thin layers over torch / MONAI).

* :mod:`.tokens`: a small convolutional encoder that turns an image into a spatial grid of tokens
  (and the decoder used to pre-train it self-supervised), fixed 2D sine-cosine position codes.
* :mod:`.attention`: single-head scaled dot-product cross-attention that also returns its weights.
* :mod:`.losses`: soft Dice loss (batch Dice over the foreground classes), Gaussian KL.
"""

from __future__ import annotations

from segqc.nn.attention import CrossAttention
from segqc.nn.tokens import ConvTokenEncoder, TokenGridDecoder, sincos_2d

__all__ = ["ConvTokenEncoder", "CrossAttention", "TokenGridDecoder", "sincos_2d"]
