/* Consecutive segments of a flat buffer (a ParamSet's tensors) cut into pieces of at most
 * SEGMENT_PIECE_MAX elements, so that a reduction per segment runs as one launch however
 * unequal the segments: one block per piece sums its piece, then each segment adds its own
 * pieces' partial sums, in piece order (the same order, so the same bits, on every call).
 * Used by per-tensor gradient clipping (the backend op clip_segments): one pass and no host
 * synchronisation instead of one reduction and one read-back per tensor.
 *
 * The segments tile [0, total): segment s is [segment_start[s], segment_start[s + 1]) (padding
 * between tensors belongs to the tensor before it; zeros add nothing and stay zero when
 * scaled). Piece k is [piece_start[k], piece_start[k + 1]) inside segment piece_segment[k];
 * segment s owns pieces [segment_first_piece[s], segment_first_piece[s + 1]). */
#ifndef ALICE_SEGMENT_PIECES_H
#define ALICE_SEGMENT_PIECES_H

#include <stddef.h>

/* 32768 floats: a 256-thread block sums 128 per thread, and a ViT-B parameter set (~100 M
 * floats, ~200 tensors) becomes ~3300 blocks, enough to fill any GPU. */
enum { SEGMENT_PIECE_MAX = 32768 };

typedef struct {
    int pieces, segments;
    /* backend memory */
    size_t *piece_start;        /* [pieces + 1] */
    int *piece_segment;         /* [pieces] */
    int *segment_first_piece;   /* [segments + 1] */
    double *piece_sums;         /* [pieces]: scratch of the reductions */
} SegmentPieces;

struct AliceBackend;

/* Host arrays of the pieces of segments [segment_start[s], segment_start[s + 1]), s <
 * segments, each cut into pieces of at most piece_max elements (empty segments get none):
 * returns the piece count and sets *piece_start [pieces + 1], *piece_segment [pieces],
 * *segment_first_piece [segments + 1] (malloc'd). */
int segment_pieces_plan(const size_t *segment_start, int segments, size_t piece_max,
                        size_t **piece_start, int **piece_segment, int **segment_first_piece);
/* segment_pieces_plan with SEGMENT_PIECE_MAX, uploaded to backend memory of be. */
void segment_pieces_build(SegmentPieces *sp, const struct AliceBackend *be,
                          const size_t *segment_start, int segments);
void segment_pieces_free(SegmentPieces *sp, const struct AliceBackend *be);

#endif
