/* nano_format.h - the packed weight layout of a .nano file, as C sees it.
 *
 * This header and the docstring of nano_runtime/formats/nano_file.py describe
 * the same layout; tests/test_format_layout.py checks them bit for bit.
 *
 * A .nano file is a safetensors container (8-byte little-endian header length,
 * JSON header, then raw tensor bytes). Every quantized linear weight W of
 * logical shape [N, K] (N output rows, K input columns, row-major, y = W x)
 * is stored as a few tensors sharing a name prefix P:
 *
 *   Q4 (int4, groupwise along K, group size G in {32, 64, 128}):
 *     P.qweight  uint8   [N, K/2]      two 4-bit codes per byte, see below
 *     P.scales   float16 [N, ceil(K/G)]
 *     P.mins     float16 [N, ceil(K/G)]  asymmetric groups only
 *
 *     K must be a multiple of 32 (NANO_QK). The last group of a row may be
 *     shorter than G (it covers K - (ngroups-1)*G columns, a multiple of 32);
 *     nothing is padded.
 *
 *     Codes come in blocks of 32 consecutive columns. Inside one block of a
 *     row, byte j (0 <= j < 16) holds column 32b+j in its low nibble and
 *     column 32b+j+16 in its high nibble (the ggml Q4_0/Q4_1 order, so a
 *     16-byte load unpacks to 32 in-order codes with one AND and one shift).
 *
 *     dequantized value of code q (0..15) in group g:
 *       symmetric : x = scales[g] * (q - 8)
 *       asymmetric: x = scales[g] * q + mins[g]      (exactly GGUF Q4_1)
 *
 *   Q8 (int8, embeddings and output head; group fixed at 32):
 *     P.qweight8 int8    [N, K]
 *     P.scales   float16 [N, K/32]
 *       x = scales[g] * q                           (exactly GGUF Q8_0)
 *
 *   Unquantized tensors (norms, small vectors) are stored as float32 (or
 *   float16) under their plain name.
 */
#ifndef NANO_FORMAT_H
#define NANO_FORMAT_H

#include <stdint.h>

#define NANO_FORMAT_VERSION 1
#define NANO_QK 32          /* columns per packed block                 */
#define NANO_Q4_BLOCK_BYTES 16 /* bytes of codes per 32-column block   */
#define NANO_Q8_GROUP 32    /* group size of the int8 weight format     */

typedef uint16_t nano_fp16_t; /* IEEE binary16 bits */

/* Code of column k (0 <= k < K) of one packed row `row` (K/2 bytes). */
static inline int nano_q4_code(const uint8_t *row, int k) {
    const uint8_t b = row[(k / NANO_QK) * NANO_Q4_BLOCK_BYTES + (k % NANO_QK) % 16];
    return ((k % NANO_QK) < 16) ? (b & 0x0F) : (b >> 4);
}

#endif /* NANO_FORMAT_H */
