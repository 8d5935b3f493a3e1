#include "ops/segment_pieces.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "ops/backend.h"

int segment_pieces_plan(const size_t *segment_start, int segments, size_t piece_max,
                        size_t **piece_start, int **piece_segment, int **segment_first_piece)
{
    ALICE_ASSERT(segments >= 0 && piece_max > 0, "segment_pieces_plan: %d segments, pieces of %zu",
                 segments, piece_max);
    int pieces = 0;
    for (int s = 0; s < segments; s++) {
        ALICE_ASSERT(segment_start[s + 1] >= segment_start[s],
                     "segment_pieces_plan: segment %d ends before it starts", s);
        pieces += (int)((segment_start[s + 1] - segment_start[s] + piece_max - 1) / piece_max);
    }
    size_t *start = xmalloc((size_t)(pieces + 1) * sizeof *start);
    int *owner = xmalloc((size_t)(pieces ? pieces : 1) * sizeof *owner);
    int *first = xmalloc((size_t)(segments + 1) * sizeof *first);
    int k = 0;
    for (int s = 0; s < segments; s++) {
        first[s] = k;
        for (size_t at = segment_start[s]; at < segment_start[s + 1]; at += piece_max) {
            start[k] = at;
            owner[k++] = s;
        }
    }
    first[segments] = k;
    start[k] = segments ? segment_start[segments] : 0;
    *piece_start = start;
    *piece_segment = owner;
    *segment_first_piece = first;
    return pieces;
}

/* A host array copied into fresh backend memory. */
static void *uploaded(const AliceBackend *be, const void *host, size_t bytes)
{
    void *dev = be->alloc(bytes ? bytes : 1);
    if (bytes) be->upload(dev, host, bytes);
    return dev;
}

void segment_pieces_build(SegmentPieces *sp, const AliceBackend *be, const size_t *segment_start,
                          int segments)
{
    size_t *start;
    int *owner, *first;
    memset(sp, 0, sizeof *sp);
    sp->segments = segments;
    sp->pieces = segment_pieces_plan(segment_start, segments, SEGMENT_PIECE_MAX, &start, &owner,
                                     &first);
    sp->piece_start = uploaded(be, start, (size_t)(sp->pieces + 1) * sizeof *start);
    sp->piece_segment = uploaded(be, owner, (size_t)sp->pieces * sizeof *owner);
    sp->segment_first_piece = uploaded(be, first, (size_t)(segments + 1) * sizeof *first);
    sp->piece_sums = be->alloc((size_t)(sp->pieces ? sp->pieces : 1) * sizeof(double));
    free(start);
    free(owner);
    free(first);
}

void segment_pieces_free(SegmentPieces *sp, const AliceBackend *be)
{
    if (!sp->piece_start) return;
    be->release(sp->piece_start);
    be->release(sp->piece_segment);
    be->release(sp->segment_first_piece);
    be->release(sp->piece_sums);
    memset(sp, 0, sizeof *sp);
}
