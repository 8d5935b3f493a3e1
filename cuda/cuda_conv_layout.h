/* Layout copies for the convolutions' channels-last weight gradients (config key
 * conv_wgrad_layout = ndhwc, cuda/cuda_conv.cu): the NCDHW tensors cuDNN's channels-last
 * backward-filter kernels cannot read are copied channels-last first, and the filter gradient
 * they write (KDHWC) is transposed back onto the backend's [Cout, Cin, k, k, k] dW. */
#ifndef ALICE_CUDA_CONV_LAYOUT_H
#define ALICE_CUDA_CONV_LAYOUT_H

/* dst [B, V, C] = src [B, C, V] (one batched 2-D transpose; V the spatial volume). */
void cuda_to_channels_last(float *dst, const float *src, int B, int C, long V);

/* dW[k, c, r] += dW_cl[k, r, c] for K filters, C input channels, R = kernel volume: the
 * channels-last filter gradient accumulated onto the backend's layout (the contract's
 * accumulation of parameter gradients). */
void cuda_filter_from_channels_last_accumulate(float *dW, const float *dW_cl, int K, int C, int R);

#endif
