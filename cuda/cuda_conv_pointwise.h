/* Own kernels for pointwise (1x1x1) 3D convolutions with few channels on NCDHW tensors, the
 * CUDA backend's conv3d_fwd / conv3d_bwd where config key pointwise_conv = own selects them
 * (gpu_device.h) and the shape fits (cuda/cuda_conv_pointwise.cu). */
#ifndef ALICE_CUDA_CONV_POINTWISE_H
#define ALICE_CUDA_CONV_POINTWISE_H

/* Input and output channels these kernels take at most (registers per voxel, shared tiles). */
constexpr int kPointwiseMaxChannels = 32;

/* Whether the own kernels run this convolution: pointwise_conv = own, k = 1, s = 1, pad = 0,
 * Cin and Cout in 1..kPointwiseMaxChannels. */
bool cuda_pointwise_conv_runs(int Cin, int Cout, int k, int s, int pad);

/* conv3d_fwd / conv3d_bwd (backend.h) of such a convolution over V voxels per batch element;
 * dW and db accumulate, dx is overwritten; any of dx, dW, db may be NULL. */
void cuda_pointwise_conv_fwd(float *y, const float *x, const float *W, const float *b, int B,
                             int Cin, int Cout, long V);
void cuda_pointwise_conv_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                             const float *W, int B, int Cin, int Cout, long V);

#endif
