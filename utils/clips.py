"""Clips of video frames: which frames a clip holds and which of them is labelled.

A clip of ``T`` frames around a labelled frame ``n`` of a sequence, ``stride``
frames apart, holds the frames ``n + (k - (T - 1) // 2) * stride`` for
``k = 0 .. T-1``: the labelled frame is at index ``(T - 1) // 2`` (the middle
one for odd ``T``, the earlier of the two middle ones for even ``T``). The
datasets build clips with it, and the video CCNet predicts that frame.
"""
from __future__ import annotations

__all__ = ["DEFAULT_CLIP_LENGTH", "labelled_frame", "clip_offsets"]

#: Frames per clip of the video models when none is given: the TPAMI paper's CamVid clips (5 frames,
#: from secondary sources; the paper's text is not checked).
DEFAULT_CLIP_LENGTH = 5


def labelled_frame(clip_length: int) -> int:
    """Index of the labelled frame in a clip of ``clip_length`` frames."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be at least 1, got {clip_length}")
    return (clip_length - 1) // 2


def clip_offsets(clip_length: int, stride: int = 1) -> list[int]:
    """Frame-number offsets of a clip's frames from its labelled frame."""
    if stride < 1:
        raise ValueError(f"clip_stride must be at least 1, got {stride}")
    centre = labelled_frame(clip_length)
    return [(k - centre) * stride for k in range(clip_length)]
