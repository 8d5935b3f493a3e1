/* Own weight gradient of 3x3x3, stride 1, padding 1 convolutions with few channels on NCDHW
 * tensors, the CUDA backend's conv3d_bwd dW where config key conv_wgrad_kernel = own selects it
 * (gpu_device.h) and the shape fits (cuda/cuda_conv_wgrad3.cu). */
#ifndef ALICE_CUDA_CONV_WGRAD3_H
#define ALICE_CUDA_CONV_WGRAD3_H

/* Input and output channels the kernel takes at most (its shared tile holds every input
 * channel's halo; its threads own pairs of output channels against one input channel). */
constexpr int kWgrad3MaxChannels = 32;

/* Whether the own kernel computes this convolution's weight gradient: conv_wgrad_kernel = own,
 * k = 3, s = 1, pad = 1, Cin and Cout in 1..kWgrad3MaxChannels, Cin x ceil(Cout / 2) at most
 * one block's threads, and Z (the fastest axis) at least one tile long (32). */
bool cuda_conv_wgrad3_runs(int Cin, int Cout, int k, int s, int pad, int Z);

/* (Any volume; the channel limits above are asserted.)
 * dW [Cout, Cin, 3, 3, 3] += sum over b and the output voxels of dy [B, Cout, X, Y, Z] times
 * x [B, Cin, X, Y, Z] shifted by the tap (zero outside the volume); fp32 arithmetic whatever
 * the math mode, deterministic (per-block partials added in block order). */
void cuda_conv_wgrad3(float *dW, const float *dy, const float *x, int B, int Cin, int Cout,
                      int X, int Y, int Z);

#endif
