"""User-facing errors. Each names the problem and the fix; the CLI maps them to exit code 2."""


class TsirError(Exception):
    """Bad input: the message says what is wrong and what to do."""


class UnsupportedOpError(TsirError):
    """The TVM PyTorch frontend has no converter for some ops of the model."""


class StaticShapeError(TsirError):
    """A model input or value has a symbolic dimension."""


class TargetError(TsirError):
    """Unknown or malformed target."""


class VerificationError(TsirError):
    """The optimized model's outputs differ from the original's beyond tolerance."""
