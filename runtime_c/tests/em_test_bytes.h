/* Little-endian u32/u64 fields, the byte order of a .emm file: read and write them in a buffer. Shared by the
 * test builder (patching finished files) and the fuzz tools (mutating and re-sealing files). */
#ifndef EDGEMERGE_EM_TEST_BYTES_H
#define EDGEMERGE_EM_TEST_BYTES_H

#include <stdint.h>

uint32_t emb_get_u32(const uint8_t *p);
uint64_t emb_get_u64(const uint8_t *p);
void emb_put_u32(uint8_t *p, uint32_t v);
void emb_put_u64(uint8_t *p, uint64_t v);

#endif
