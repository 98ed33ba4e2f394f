"""CCNet models: the criss-cross attention op, backbones, heads and losses."""
import jittor_env  # noqa: F401  (must run before jittor is imported)
