/* Constants of the .emm format (docs/FORMAT.md), defined once for C.
 * sdk/edgemerge/emm/constants.py mirrors every name here (without the EM_ prefix);
 * tests/emm/test_format_constants.py fails if the two disagree. */
#ifndef EDGEMERGE_EM_FORMAT_H
#define EDGEMERGE_EM_FORMAT_H

#define EM_MAGIC_U32 0x464D4D45u /* "EMMF" read as a little-endian u32 */
#define EM_VERSION 2u
#define EM_MIN_VERSION 1u /* the oldest version this reader accepts (FORMAT.md "Version 1 files") */
#define EM_SENTINEL_U32 0x0A0B0C0Du
#define EM_SENTINEL_F32_BITS 0xBFC00000u /* -1.5f */
#define EM_HEADER_BYTES 64u
#define EM_SECTION_ENTRY_BYTES 32u
#define EM_TASK_RECORD_BYTES 48u
#define EM_INPUT_RECORD_BYTES 16u
#define EM_NODE_RECORD_BYTES 96u
#define EM_TENSOR_RECORD_BYTES 48u
#define EM_TASK_NAME_BYTES 32u
#define EM_ALIGNMENT 64u
#define EM_NONE 0xFFFFFFFFu

/* Limits enforced by the loader. */
#define EM_MAX_SECTIONS 64u
#define EM_MAX_TASKS 64u
#define EM_MAX_INPUTS 64u
#define EM_MAX_NODES 4096u
#define EM_MAX_TENSORS 16384u
#define EM_MAX_META_ENTRIES 65536u
#define EM_MAX_KEY_BYTES 255u
#define EM_MAX_STRING_BYTES 1048576u
#define EM_MAX_DIM 16777216u
#define EM_MAX_TENSOR_ELEMENTS 2147483647u
#define EM_MAX_VALUE_ELEMENTS 268435456u
#define EM_MAX_KERNEL 64u
#define EM_MAX_STRIDE 16u
#define EM_MAX_SEG_LEN 256u
#define EM_MAX_CODEWORDS 65536u
#define EM_MAX_FILE_BYTES 4294967295u /* 2^32 - 1: offsets fit 32 bits */
#define EM_MAX_NODE_INPUTS 64u
#define EM_MAX_PAD 256u
#define EM_GRAPH_HEADER_BYTES_V1 8u
#define EM_GRAPH_HEADER_BYTES 16u

/* Section kinds. */
#define EM_SECTION_META 1u
#define EM_SECTION_TASKS 2u
#define EM_SECTION_GRAPH 3u
#define EM_SECTION_TENSORS 4u
#define EM_SECTION_DATA 5u
#define EM_EXTENSION_SECTION_MIN 0x1000u
#define EM_EXTENSION_SECTION_MAX 0xFFFFu

/* Metadata value types. */
#define EM_META_U64 1u
#define EM_META_I64 2u
#define EM_META_F64 3u
#define EM_META_STRING 4u

/* Metadata keys the loader reads (sdk/edgemerge/emm/constants.py `Keys` names every key once; these mirror
 * the ones C uses, checked by tests/emm/test_format_constants.py). */
#define EM_KEY_GENERAL_TOOL_VERSION "edgemerge.tool_version"
#define EM_KEY_GENERAL_ORIGINAL_BYTES "edgemerge.original_bytes"
#define EM_KEY_SOURCE_COUNT "source.count"
#define EM_KEY_SOURCE_PREFIX "source."
#define EM_KEY_NODE_PREFIX "node."
#define EM_KEY_TENSOR_PREFIX "tensor."

/* Tensor data types. */
#define EM_DTYPE_F32 1u
#define EM_DTYPE_IDX 2u

/* Graph ops. */
#define EM_OP_CONV2D 1u
#define EM_OP_DEPTHWISE_CONV2D 2u
#define EM_OP_DENSE 3u
#define EM_OP_MAX_POOL 4u
#define EM_OP_AVG_POOL 5u
#define EM_OP_GLOBAL_AVG_POOL 6u
#define EM_OP_RESHAPE 7u
#define EM_OP_LUT_CONV2D 8u
#define EM_OP_LUT_DENSE 9u
#define EM_OP_ACTIVATION 10u
#define EM_OP_ADD 11u
#define EM_OP_CONCAT 12u
#define EM_OP_MUL 13u
#define EM_OP_PAD 14u
#define EM_OP_LUT_DEPTHWISE_CONV2D 15u /* clustered depthwise, decoded at load (FORMAT.md) */

/* Node flags (struct em_node.flags). INT8_TABLES: a LUT op with C = INT8_TABLE_CODEWORDS (4-bit indices)
 * whose table is quantised to int8 per run and accumulated in integers (FORMAT.md "int8 tables"). */
#define EM_NODE_FLAG_INT8_TABLES 1u
/* INT8_ACT: a LUT op whose input is quantised to int8 with the scale stored in the node record's
 * reserved[1] (float32 bits) and whose codebook is quantised to int8 at load; table and sums in int32
 * (FORMAT.md "int8 activations"). Exclusive with INT8_TABLES. */
#define EM_NODE_FLAG_INT8_ACT 2u
#define EM_NODE_FLAGS_KNOWN 3u
/* The node-record word (index into the 24 u32 words) holding INT8_ACT's input scale. */
#define EM_NODE_WORD_INPUT_SCALE 21u
/* Largest |q| of an int8 activation or codebook entry (symmetric, -128 unused). */
#define EM_INT8_ACT_MAX 127u
/* Terms (taps · S · r products of |q| <= 127) whose int32 sum of one output is always exact:
 * floor((2^31 − 1) / 127²). */
#define EM_INT8_ACT_MAX_PRODUCTS 133144u
#define EM_INT8_TABLE_CODEWORDS 16u

/* Fused activations. */
#define EM_ACT_NONE 0u
#define EM_ACT_RELU 1u
#define EM_ACT_RELU6 2u
#define EM_ACT_SIGMOID 3u
#define EM_ACT_HARD_SIGMOID 4u
#define EM_ACT_HARD_SWISH 5u
#define EM_ACT_SWISH 6u
#define EM_ACT_LAST 6u /* the largest activation value */

/* Status codes (em_status). */
#define EM_STATUS_OK 0u
#define EM_STATUS_BAD_MAGIC 1u
#define EM_STATUS_FUTURE_VERSION 2u
#define EM_STATUS_TRUNCATED 3u
#define EM_STATUS_BAD_CRC 4u
#define EM_STATUS_CORRUPT 5u
#define EM_STATUS_LIMIT 6u
#define EM_STATUS_NO_MEMORY 7u
#define EM_STATUS_BAD_ARGUMENT 8u
#define EM_STATUS_MISALIGNED 9u
#define EM_STATUS_UNSUPPORTED 10u

#endif /* EDGEMERGE_EM_FORMAT_H */
