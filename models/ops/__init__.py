"""The custom kernels: each op's C++/CUDA headers beside the Python that launches them.

=================  ============================================================
``cca``            criss-cross attention (``cca_cpu.h``, ``cca_cuda.cuh``) and
                   its plain-Jittor reference
``cca3d``          criss-cross attention over a clip (rows, columns, time lines):
                   the plain-Jittor reference (kernels to come)
``batchnorm``      training-mode BatchNorm + residual + activation (``batchnorm_cpu.h``)
``conv``           1x1 and depthwise convolutions (``conv_cpu.h``)
``upsample_nll``   cross-entropy of upsampled logits (``upsample_nll_cpu.h``)
``loader``         the one header loader and ``jt.code`` call
=================  ============================================================

Each op is a function over ``jt.Function`` subclasses (forward and backward
kernels); the layers built on them are in ``models.layers`` and ``models.ccnet``.
"""
