"""Constants of the `.emm` format (docs/FORMAT.md), defined once for Python.

`runtime_c/include/edgemerge/em_format.h` mirrors every name here (prefixed `EM_`);
`tests/emm/test_format_constants.py` fails if the two disagree.
"""
from __future__ import annotations

import enum

MAGIC = b"EMMF"
MAGIC_U32 = 0x464D4D45
VERSION = 2
MIN_VERSION = 1  # the oldest version readers accept (FORMAT.md "Version 1 files")
SENTINEL_U32 = 0x0A0B0C0D
SENTINEL_F32 = -1.5
SENTINEL_F32_BITS = 0xBFC00000
HEADER_BYTES = 64
SECTION_ENTRY_BYTES = 32
TASK_RECORD_BYTES = 48
INPUT_RECORD_BYTES = 16
NODE_RECORD_BYTES = 96
TENSOR_RECORD_BYTES = 48
TASK_NAME_BYTES = 32
ALIGNMENT = 64
NONE = 0xFFFFFFFF

MAX_SECTIONS = 64
MAX_TASKS = 64
MAX_INPUTS = 64
MAX_NODES = 4096
MAX_TENSORS = 16384
MAX_META_ENTRIES = 65536
MAX_KEY_BYTES = 255
MAX_STRING_BYTES = 1 << 20
MAX_DIM = 1 << 24
MAX_TENSOR_ELEMENTS = (1 << 31) - 1
MAX_VALUE_ELEMENTS = 1 << 28
MAX_KERNEL = 64
MAX_STRIDE = 16
MAX_SEG_LEN = 256
MAX_CODEWORDS = 65536
MAX_FILE_BYTES = (1 << 32) - 1
MAX_NODE_INPUTS = 64
MAX_PAD = 256
ACT_LAST = 6  # the largest activation value (Act)
GRAPH_HEADER_BYTES_V1 = 8
GRAPH_HEADER_BYTES = 16

# Node flags (em_node.flags). NODE_FLAG_INT8_TABLES: a LUT op with C = INT8_TABLE_CODEWORDS (4-bit
# indices) whose table is quantised to int8 per run and accumulated in integers (FORMAT.md "int8 tables").
NODE_FLAG_INT8_TABLES = 1
# NODE_FLAG_INT8_ACT: a LUT op whose input is quantised to int8 with a scale stored in the node record
# (word NODE_WORD_INPUT_SCALE, float32 bits) and whose codebook is quantised to int8 at load; exact int32
# table and sums (FORMAT.md "int8 activations"). Exclusive with NODE_FLAG_INT8_TABLES.
NODE_FLAG_INT8_ACT = 2
NODE_FLAGS_KNOWN = 3
NODE_WORD_INPUT_SCALE = 21
INT8_ACT_MAX = 127
INT8_ACT_MAX_PRODUCTS = (2**31 - 1) // (127 * 127)
INT8_TABLE_CODEWORDS = 16


class Section(enum.IntEnum):
    META = 1
    TASKS = 2
    GRAPH = 3
    TENSORS = 4
    DATA = 5


EXTENSION_SECTION_MIN = 0x1000
EXTENSION_SECTION_MAX = 0xFFFF


class MetaType(enum.IntEnum):
    U64 = 1
    I64 = 2
    F64 = 3
    STRING = 4


class DType(enum.IntEnum):
    F32 = 1
    IDX = 2


class Op(enum.IntEnum):
    CONV2D = 1
    DEPTHWISE_CONV2D = 2
    DENSE = 3
    MAX_POOL = 4
    AVG_POOL = 5
    GLOBAL_AVG_POOL = 6
    RESHAPE = 7
    LUT_CONV2D = 8
    LUT_DENSE = 9
    ACTIVATION = 10
    ADD = 11
    CONCAT = 12
    MUL = 13
    PAD = 14
    LUT_DEPTHWISE_CONV2D = 15      # clustered depthwise kernels, decoded at load (FORMAT.md)


class Act(enum.IntEnum):
    NONE = 0
    RELU = 1
    RELU6 = 2
    SIGMOID = 3
    HARD_SIGMOID = 4
    HARD_SWISH = 5
    SWISH = 6


class Status(enum.IntEnum):
    """Status codes returned by the C runtime (`em_status`)."""
    OK = 0
    BAD_MAGIC = 1
    FUTURE_VERSION = 2
    TRUNCATED = 3
    BAD_CRC = 4
    CORRUPT = 5
    LIMIT = 6
    NO_MEMORY = 7
    BAD_ARGUMENT = 8
    MISALIGNED = 9
    UNSUPPORTED = 10


class Keys:
    """Every metadata key once (docs/FORMAT.md "Metadata keys"), as gguf-py's `Keys.General.ARCHITECTURE`.
    Keys with `{i}` are per node / tensor / source: `Keys.Node.NAME.format(i=3)`. The keys the C loader
    reads are mirrored in em_format.h as EM_KEY_*; tests/emm/test_format_constants.py checks both."""

    class General:
        TOOL_VERSION = "edgemerge.tool_version"
        ORIGINAL_BYTES = "edgemerge.original_bytes"

    class Source:
        COUNT = "source.count"
        PREFIX = "source."
        TASK = "source.{i}.task"
        FILE = "source.{i}.file"
        PARAM_BYTES = "source.{i}.param_bytes"

    class Node:
        PREFIX = "node."
        NAME = "node.{i}.name"
        SOURCES = "node.{i}.sources"
        MATCH_OUTPUT = "node.{i}.match_output"

    class Tensor:
        PREFIX = "tensor."
        NAME = "tensor.{i}.name"

    class Merge:
        PRESET = "merge.preset"
        SEED = "merge.seed"
        KMEANS_INITS = "merge.kmeans_inits"
        INT8_TABLES = "merge.int8_tables"
        SHARED_CODEBOOKS = "merge.shared_codebooks"

    class Calibrate:
        STEPS = "calibrate.steps"
        SEED = "calibrate.seed"
        L1_WEIGHT = "calibrate.l1_weight"
        CALIB_FRACTION = "calibrate.calib_fraction"
        BEST_STEP = "calibrate.best_step"
        INT8_FINETUNE_STEPS = "calibrate.int8_finetune_steps"        # calibration with simulated int8 activations
        INT8_FINETUNE_BEST_STEP = "calibrate.int8_finetune_best_step"

    class Zipper:
        K = "zipper.k"
        BLOCKS = "zipper.blocks"
        SHARE = "zipper.share"
        BN = "zipper.bn"
        ALIGN = "zipper.align"
        ENCODE = "zipper.encode"


def keys() -> dict[str, str]:
    """Every metadata key by its C name (KEY_<GROUP>_<NAME>); the C header mirrors the ones it reads."""
    out: dict[str, str] = {}
    for group_name, group in vars(Keys).items():
        if isinstance(group, type):
            for name, value in vars(group).items():
                if name.isupper():
                    out[f"KEY_{group_name.upper()}_{name}"] = value
    return out


def index_bits(codewords: int) -> int:
    """Bits per index for a codebook of `codewords` entries: max(1, ceil(log2 C))."""
    return max(1, (int(codewords) - 1).bit_length())


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


def constants() -> dict[str, int]:
    """Every integer constant by its C name (without the EM_ prefix); compared with the C header."""
    out: dict[str, int] = {}
    for name, value in globals().items():
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    for enum_cls, prefix in ((Section, "SECTION_"), (MetaType, "META_"), (DType, "DTYPE_"),
                             (Op, "OP_"), (Act, "ACT_"), (Status, "STATUS_")):
        for member in enum_cls:
            out[prefix + member.name] = int(member)
    return out
