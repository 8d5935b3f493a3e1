/* Serial host emulation of CUDA launches, for kernels with no barriers, shuffles or shared
 * memory (the vectorised elementwise kernels, AdamW): every CUDA thread of a grid runs to
 * completion one after another, blocks in order, threads in order, which is a valid schedule
 * for such kernels and far faster than emu_cuda.h's thread per CUDA thread. Used by
 * vector_kernels_emulated.cpp and adamw_emulated.cpp (via test_vector_kernels_emulated.sh and
 * test_adamw_emulated.sh, which cut the kernels out of cuda/ with cut_kernels.py).
 *
 * Launches are counted (emu_launches) as are thread runs (emu_thread_runs); a test may cap the
 * grid (emu_max_grid) so every thread of a grid-stride loop runs several chunks. A block size
 * the GPU would refuse, or that is not whole warps (the kernels assume whole warps), aborts. */
#ifndef ALICE_EMU_SERIAL_H
#define ALICE_EMU_SERIAL_H

#include <cstdio>
#include <cstdlib>

#include "emu_cuda_types.h"

inline EmuIndex threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline long emu_launches, emu_thread_runs;
inline unsigned emu_max_grid = 1u << 30;

/* kernel<<<grid, block, smem, stream>>>(args...), 1-D blocks, 1-D or 2-D grids (each axis
 * capped at emu_max_grid, so the kernels' strides past the grid run too). */
template <typename Kernel, typename... Args>
void emu_launch(Kernel kernel, dim3 grid, unsigned block, unsigned smem, int stream, Args... args)
{
    (void)smem;
    (void)stream;
    emu_launches++;
    if (grid.x > emu_max_grid) grid.x = emu_max_grid;
    if (grid.y > emu_max_grid) grid.y = emu_max_grid;
    if (block == 0 || block > 1024 || block % 32) {
        fprintf(stderr, "emu_launch: bad block size %u (1..1024 threads, whole warps)\n", block);
        abort();
    }
    gridDim = grid;
    blockDim = dim3(block);
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned b = 0; b < grid.x; b++)
            for (unsigned t = 0; t < block; t++) {
                blockIdx = {b, by, 0};
                threadIdx = {t, 0, 0};
                kernel(args...);
                emu_thread_runs++;
            }
}

#endif
