/* The registry of configuration keys: the one place where a key, its default and its valid
 * values are defined (docs/CONFIG.md is generated from it by `alice config --doc`). */
#include <stddef.h>

#include "core/config.h"

#define K(name, type, field, def, valid, help) \
    { name, type, offsetof(Config, field), def, valid, help }

const ConfigKey config_keys[] = {
    K("device", CFG_T_ENUM, device, "cpu", "cpu|cuda", "backend the model runs on"),
    K("precision", CFG_T_ENUM, precision, "fp32", "fp32|bf16", "bf16: mixed precision, bf16 GEMM operands (cuda) and bf16 transformer activations (see bf16_activations) with fp32 accumulation, fp32 master weights, gradients, loss and optimiser state; fp32 = full precision (cpu/cuda parity)"),
    K("bf16_activations", CFG_T_BOOL, bf16_activations, "1", "", "precision = bf16: transformer GEMM inputs, qkv, attention output and MLP hidden layer stored in bf16 (fp32 residual stream; the cpu backend emulates it, slower); 0 = bf16 GEMM operands only"),
    K("bf16_branch_out", CFG_T_BOOL, bf16_branch_out, "1", "", "bf16 activations: the attention projection and fc2 store their outputs in bf16 (PyTorch autocast's rounding) and the next LayerNorm adds them to the fp32 residual stream in its pass (1.03x the paper step on an H200); 0 = the GEMM adds the residual in an fp32 store (docs/MODEL.md)"),
    K("bf16_weight_copy", CFG_T_BOOL, bf16_weight_copy, "1", "", "cuda, precision = bf16: round the weights to bf16 once per optimiser step instead of in every GEMM (same results; 0 only to measure it)"),
    K("tf32", CFG_T_BOOL, tf32, "0", "", "cuda: let fp32 GEMMs and convolutions use TF32 tensor cores"),
    K("gemm_autotune", CFG_T_BOOL, gemm_autotune, "0", "",
      "cuda: when a GEMM shape is first met (eagerly, not while a CUDA graph records), time up to 8 "
      "of cuBLASLt's heuristic candidates on the call's own operands (1 warm-up + 3 timed launches, "
      "into scratch memory) and keep the fastest; 0 = the heuristic's first choice. Results differ "
      "only by the algorithm's summation order, but the choice follows timings, so runs are not "
      "bit-reproducible with it; a log line at the end of the run sums the chosen vs the first "
      "algorithms' times (measured on an H200, the paper bf16 step: 15.9 ms with it, 16.5 ms "
      "without; tests/bench/bench_cuda_ops, tests/gpu/run.sh)"),
    K("conv_autotune", CFG_T_BOOL, conv_autotune, "0", "",
      "cuda: when a 3D convolution shape is first met (eagerly, not while a CUDA graph records), let "
      "cuDNN's Find time its forward, backward-data and backward-filter algorithms on scratch "
      "buffers of that shape and keep the fastest DETERMINISTIC one within the 1 GiB workspace "
      "limit; 0 = the heuristic's first deterministic choice. Results differ only by the "
      "algorithm's summation order, but the choice follows timings, so runs are not "
      "bit-reproducible with it; a log line at the end of the run sums the chosen vs the "
      "heuristic's algorithms' times (measured on an H200, the UNETR bf16 step: 58.8 ms with it, "
      "57.9 ms without; tests/gpu/run.sh)"),
    K("cuda_graph", CFG_T_ENUM, cuda_graph, "auto", "auto|1|0",
      "record the training step's forward and backward (pre-training, UNETR fine-tuning) once as a "
      "CUDA graph (after an eager warm-up step) and replay it every step; a failed recording falls "
      "back to eager steps with a warning. 1 = always (several ranks: the gradient all-reduce then "
      "runs once after backward, outside the graph, overlap_allreduce is turned off; device = cpu "
      "ignores it with a warning); 0 = never; auto = where the backend records graphs (CUDA) and "
      "the all-reduce is not overlapped with backward (one rank, overlap_allreduce = 0, or ranks "
      "sharing a GPU): with several GPUs hiding the all-reduce is worth more than the graph "
      "(measured on an H200, the paper bf16 step with the defaults, its update included: "
      "17.3 ms eager, 16.5 ms with the graph, 1.05x); "
      "device = cpu: eager, silently. 1 and 0 may also be spelt true|false, yes|no, on|off"),
    K("attention_kernel", CFG_T_ENUM, attention_kernel, "auto", "auto|gemm|fused|cudnn",
      "cuda attention: gemm = batched GEMMs, probabilities [B,H,Tq,Tk] saved for backward; fused = "
      "the own flash-attention kernels saving only the row logsumexp [B,H,Tq] (heads up to 128 "
      "wide); cudnn = cuDNN's fused attention (graph API, cudnn-frontend headers from "
      "scripts/deps.sh) for bf16 attention at head widths that are multiples of 8 up to 128 with "
      "16-byte aligned rows, fused elsewhere (and where cuDNN refuses a shape, with a warning); "
      "auto = cudnn where the fused kernels run on bf16 tensor cores from registers (precision = "
      "bf16, head width 32 or 64) and this build has cuDNN's attention, fused there otherwise, "
      "gemm elsewhere (fp32 tiles of the fused kernels are slower than gemm). Measured on an "
      "H200, bf16 attention forward + backward: cudnn 2.03x the fused kernels at head width 64, "
      "1.31x at 32; paper bf16 step 16.5 ms with cudnn, 18.5 ms with fused (tests/bench/"
      "bench_cuda_ops, tests/gpu/run.sh); device = cpu ignores the key"),
    K("instnorm_kernel", CFG_T_ENUM, instnorm_kernel, "own", "own|cudnn",
      "cuda instance norm (UNETR res blocks): own = the backend's kernels; cudnn = cuDNN's "
      "training-mode batch norm over each (batch, channel) plane (falls back to own where cuDNN "
      "cannot run it; tests/bench/bench_instnorm measures both)"),
    K("conv_wgrad_layout", CFG_T_ENUM, conv_wgrad_layout, "ncdhw", "ncdhw|ndhwc",
      "cuda 3D convolutions' weight gradients (UNETR): ncdhw = cuDNN's backward-filter on the "
      "NCDHW tensors; ndhwc = on channels-last copies of the input and the output gradient (own "
      "transposes), for cuDNN's channels-last kernels (falls back to ncdhw per shape where cuDNN "
      "offers no deterministic one); results differ by summation order only. Measured "
      "(tests/gpu/run.sh, run 12, H200): ndhwc 0.96x the UNETR step's speed with ncdhw"),
    K("conv_wgrad_kernel", CFG_T_ENUM, conv_wgrad_kernel, "own", "own|cudnn",
      "cuda weight gradients of 3x3x3 stride-1 convolutions with at most 32 input and output "
      "channels (UNETR's res blocks at the full crop): own = the backend's kernel on the NCDHW "
      "tensors (fp32 whatever tf32 says, deterministic); cudnn = cuDNN's backward-filter in the "
      "layout conv_wgrad_layout names. Measured (tests/gpu/run.sh, run 13, H200): own 1.057x "
      "the UNETR step's speed with cudnn"),
    K("pointwise_conv", CFG_T_ENUM, pointwise_conv, "cudnn", "cudnn|own",
      "cuda 1x1x1 convolutions with at most 32 input and output channels (UNETR's residual "
      "projections and output layer at the full crop): cudnn = cuDNN's convolution API; own = "
      "the backend's kernels on the NCDHW tensors (one pass per map, no layout conversions, a "
      "deterministic weight gradient). Measured (tests/gpu/run.sh, run 12, H200): own 0.98x "
      "the UNETR step's speed with cudnn"),
    K("run_dir", CFG_T_STRING, run_dir, "runs/default", "", "directory for checkpoints, logs and metrics"),
    K("seed", CFG_T_LONG, seed, "1234", "0..", "seed of every random decision"),
    K("threads", CFG_T_INT, threads, "0", "0..1024",
      "OpenMP threads per rank (0 = cores / local ranks, at most the CPUs the rank is bound to)"),

    K("data", CFG_T_STRING, data, "synthetic", "", "dataset.h5 from `alice pack`, or 'synthetic'"),
    K("crop", CFG_T_INT3, crop, "96,96,32", "1..", "crop size X,Y,Z in voxels"),
    K("window_lo", CFG_T_FLOAT, window_lo, "-125", "", "HU mapped to 0"),
    K("window_hi", CFG_T_FLOAT, window_hi, "225", "", "HU mapped to 1"),
    K("prefetch", CFG_T_INT, prefetch, "2", "0..64", "loader prefetch threads"),
    K("cache_mb", CFG_T_INT, cache_mb, "-1", "-1..", "loader volume cache in MiB per rank (0 = none, -1 = 40% of the available host memory / ranks on the node)"),
    K("data_device", CFG_T_ENUM, data_device, "cpu", "cpu|gpu", "where crops and augmentations are made: host threads, or a CUDA kernel from volumes kept in GPU memory (needs device = cuda)"),
    K("gpu_cache_mb", CFG_T_INT, gpu_cache_mb, "8192", "1..", "data_device = gpu: GPU memory for volumes in MiB (least recently used go; a larger case is cropped on the host)"),
    K("pos_fraction", CFG_T_FLOAT, pos_fraction, "0.5", "0..1", "fine-tuning crops centred on an organ (MONAI pos/(pos+neg))"),
    K("crops_per_case", CFG_T_INT, crops_per_case, "1", "1..64",
      "fine-tuning crops cut from each case drawn, each with its own centre and augmentation (MONAI's num_samples); "
      "batch must be a multiple, and batch / crops_per_case cases are read per rank and step"),
    K("crop_sampler", CFG_T_ENUM, crop_sampler, "posneg", "posneg|classes",
      "fine-tuning crop centres: posneg = foreground voxel with pos_fraction, else background (MONAI RandCropByPosNegLabeld); "
      "classes = a class drawn by class_ratios, then one of its voxels (MONAI RandCropByLabelClassesd)"),
    K("class_ratios", CFG_T_STRING, class_ratios, "", "",
      "crop_sampler = classes: num_classes comma-separated weights, background first; classes absent "
      "from a case get 0 and the rest are renormalised ('' = 1 for every class)"),
    K("matcher", CFG_T_ENUM, matcher, "profile", "profile|bbox", "anatomical matcher of pre-training pairs"),
    K("synthetic_cases", CFG_T_INT, synthetic_cases, "8", "2..10000", "phantoms generated in memory when data = synthetic"),
    K("fold", CFG_T_INT, fold, "0", "-1..", "validation fold (-1 = train on all)"),
    K("num_folds", CFG_T_INT, num_folds, "5", "1..100",
      "folds assigned at pack time, and of the synthetic cases; a packed data set keeps the "
      "folds of its packing, so fold is checked against those"),
    K("spacing", CFG_T_FLOAT3, spacing, "1.5,1.5,2.0", "0.01..100",
      "voxel spacing X,Y,Z in mm that `alice pack` resamples to (one number: the same on every "
      "axis)"),

    K("patch", CFG_T_INT, patch, "16", "1..64", "ViT patch size (voxels per side)"),
    K("embed_dim", CFG_T_INT, embed_dim, "768", "1..", "encoder width"),
    K("depth", CFG_T_INT, depth, "12", "1..48", "encoder blocks (at most 48)"),
    K("heads", CFG_T_INT, heads, "12", "1..", "encoder attention heads"),
    K("mlp_dim", CFG_T_INT, mlp_dim, "3072", "1..", "encoder MLP hidden width"),
    K("dec_dim", CFG_T_INT, dec_dim, "384", "1..", "decoder width"),
    K("dec_depth", CFG_T_INT, dec_depth, "4", "1..48", "decoder blocks (at most 48)"),
    K("dec_heads", CFG_T_INT, dec_heads, "12", "1..", "decoder attention heads"),
    K("dec_mlp_dim", CFG_T_INT, dec_mlp_dim, "1536", "1..", "decoder MLP hidden width"),
    K("drop_path", CFG_T_FLOAT, drop_path, "0", "0..0.99",
      "stochastic depth of the trained ViT encoder (pre-training: the student's; fine-tuning: "
      "UNETR's): each residual branch of block i is dropped per sample with probability "
      "drop_path x i / (depth - 1), else scaled by 1 / (1 - that); timm's DropPath as DINO and "
      "the released code (0.1-0.2) and MAE's fine-tuning (0.1) use it; the EMA teacher, the "
      "decoders, validation and inference never drop; 0 = off"),
    K("mask_ratio", CFG_T_FLOAT, mask_ratio, "0.75", "0..0.99", "fraction of patches masked"),
    K("rec_region", CFG_T_ENUM, rec_region, "masked", "masked|all",
      "l_r over the masked tokens (eq. 1) or every token of the crop (the released code's MSE)"),
    K("mask_shape", CFG_T_ENUM, mask_shape, "tokens", "tokens|z_tubes",
      "tokens = each token masked on its own; z_tubes = in-plane positions masked through every z token of the crop "
      "(the released code's masks; mask_ratio * tokens must then be whole z-columns)"),
    K("norm_pix", CFG_T_BOOL, norm_pix, "1", "", "per-patch normalised reconstruction targets"),

    K("method", CFG_T_ENUM, method, "alice", "mae|alice", "pre-training method"),
    K("head_hidden", CFG_T_INT, head_hidden, "2048", "1..", "projection head hidden width"),
    K("head_bottleneck", CFG_T_INT, head_bottleneck, "256", "1..", "projection head bottleneck"),
    K("head_out", CFG_T_INT, head_out, "256", "1..", "projection head output width"),
    K("head_norm_last", CFG_T_BOOL, head_norm_last, "1", "",
      "projection heads' last layer weight-normalised (DINO's norm_last_layer: each output "
      "unit's weight row used l2-normalised, gain 1), which bounds the logits"),
    K("head_init", CFG_T_ENUM, head_init, "xavier", "xavier|dino",
      "alice: the projection head's weights: xavier = Xavier-uniform (as every linear layer); "
      "dino = DINOHead's (fc1-fc3 normal(0, 0.02), the last layer torch's nn.Linear default "
      "uniform(+-1/sqrt(head_bottleneck)); its rows unit-norm as DINO's with head_norm_last = 1), "
      "the released code's"),
    K("freeze_last_layer", CFG_T_LONG, freeze_last_layer, "0", "0..",
      "alice: steps from step 0 during which the projection head's last layer sits out AdamW "
      "(no update, no weight decay, its moments and AdamW step count untouched, as a gradient "
      "of None in torch; the EMA teacher still follows it): DINO's freeze_last_layer, the "
      "released code's first epoch; 0 = never"),
    K("casa_dim", CFG_T_INT, casa_dim, "768", "1..", "CASA attention width"),
    K("inter_volume", CFG_T_BOOL, inter_volume, "1", "", "Q and K crops from two volumes"),
    K("key_jitter", CFG_T_FLOAT, key_jitter, "0", "0..0.5",
      "pre-training: K's centre (Q's centre mapped by the matcher, or Q's own with "
      "inter_volume = 0) moved by U(-j, j) x crop per axis; 0 = the matched point itself, so "
      "with inter_volume = 0 K is Q's crop, differently masked and augmented"),
    K("intact_aug", CFG_T_ENUM, intact_aug, "strong", "strong|none",
      "the target branch's intact views: strong = flips, quarter turns, intensity scale/shift, gamma, noise; "
      "none = the crops as cut (the released code's target views)"),
    K("pair_redraws", CFG_T_INT, pair_redraws, "0", "0..1000",
      "pre-training: a query crop whose matched point falls outside the key volume (anatomy it "
      "does not show: another field of view) is drawn again, up to this many times, as the "
      "released code redraws poorly matched pairs (100 there); 0 = every first draw kept, the "
      "point clamped into K; the run's end reports how many were redrawn and kept outside"),
    K("key_crop", CFG_T_ENUM, key_crop, "shift", "shift|pad",
      "K's crop around the matched point: shift = moved to lie inside the volume (near an edge the point leaves its centre); "
      "pad = the point where Q's centre lies in Q's crop (its centre unless Q's crop was moved "
      "or padded), zero outside the volume (the released code)"),
    K("use_dv", CFG_T_BOOL, use_dv, "1", "", "cross-volume [cls] loss l_dv"),
    K("use_casa", CFG_T_BOOL, use_casa, "1", "",
      "CASA alignment (0 = the ablation: l_st compares phi(H) and psi(Yd) token by token at the "
      "visible positions, and the intact views lose their flips and quarter turns so that those "
      "tokens show the same place; docs/MODEL.md)"),
    K("cls_source", CFG_T_ENUM, cls_source, "decoder", "decoder|encoder",
      "l_dv's [cls] vectors: decoder = the mean of the head's outputs over the decoder tokens; encoder = the head "
      "applied to the mean of the encoder's tokens through a linear map to dec_dim (cls_proj; the released code)"),
    K("casa_layer", CFG_T_ENUM, casa_layer, "single", "single|transformer",
      "CASA's form: single = one head of casa_dim and the zeta projection (the paper's eqs. 3-4); transformer = the "
      "released code's cross-attention layer: the query projected into the heads' space, casa_heads heads, residual "
      "and LayerNorm, a ReLU feed-forward of casa_ffn_dim with residual and LayerNorm"),
    K("casa_kv", CFG_T_ENUM, casa_kv, "heads", "heads|features",
      "what CASA's keys and values read: heads = the projection heads' outputs, phi(H) (student) "
      "and psi(Yd) (teacher), head_out wide; features = the features before the heads, H (the "
      "decoder's output) and Yd (the teacher's decoder features), dec_dim wide, as the paper's "
      "eqs. 3-5 read LN(H) and LN(Y) (docs/MODEL.md)"),
    K("casa_heads", CFG_T_INT, casa_heads, "8", "1..", "casa_layer = transformer: attention heads (casa_dim divisible by it)"),
    K("casa_ffn_dim", CFG_T_INT, casa_ffn_dim, "2048", "1..", "casa_layer = transformer: feed-forward width"),
    K("w_rec", CFG_T_FLOAT, w_rec, "1", "0..", "weight of l_r"),
    K("w_dv", CFG_T_FLOAT, w_dv, "1", "0..", "weight of l_dv"),
    K("w_st", CFG_T_FLOAT, w_st, "1", "0..", "weight of l_st"),
    K("ema_start", CFG_T_FLOAT, ema_start, "0.996", "0..1", "EMA momentum at step 0"),
    K("ema_end", CFG_T_FLOAT, ema_end, "1", "0..1",
      "EMA momentum the cosine reaches after the last step (docs/MODEL.md)"),
    K("teacher_decoder", CFG_T_ENUM, teacher_decoder, "full", "full|embed",
      "what the EMA teacher runs between its encoder and psi: the whole decoder (blocks and "
      "final norm, as phi's H; the released code) or only its input projection"),
    K("align_loss", CFG_T_ENUM, align_loss, "cosine", "cosine|dino",
      "form of l_dv and l_st: the paper's cosine, or DINO's centred, sharpened cross-entropy"),
    K("teacher_temp", CFG_T_FLOAT, teacher_temp, "0.04", "1e-4..", "dino: teacher softmax temperature"),
    K("student_temp", CFG_T_FLOAT, student_temp, "0.1", "1e-4..", "dino: student softmax temperature"),
    K("warmup_teacher_temp", CFG_T_FLOAT, warmup_teacher_temp, "0.04", "1e-4..",
      "dino: teacher temperature at step 0 of its warm-up"),
    K("warmup_teacher_temp_steps", CFG_T_LONG, warmup_teacher_temp_steps, "0", "0..",
      "dino: steps over which the teacher temperature goes linearly from warmup_teacher_temp "
      "to teacher_temp (DINO's warm-up; 0 = teacher_temp throughout)"),
    K("center_momentum", CFG_T_FLOAT, center_momentum, "0.9", "0..1",
      "dino: EMA momentum of the teacher centers"),

    K("batch", CFG_T_INT, batch, "2", "1..",
      "samples per rank per step (per micro-batch with accum_steps > 1)"),
    K("accum_steps", CFG_T_INT, accum_steps, "1", "1..1024",
      "gradient accumulation: micro-batches of `batch` samples per optimiser step and rank, their "
      "gradients averaged, so a step takes batch x ranks x accum_steps samples and trains as one "
      "with that global batch would (the same samples, masks and draws; a global batch beyond "
      "the memory of the ranks); 1 = off"),
    K("steps", CFG_T_LONG, steps, "100", "1..", "optimiser steps"),
    K("lr", CFG_T_FLOAT, lr, "5e-5", "0..", "peak learning rate"),
    K("lr_reference_batch", CFG_T_INT, lr_reference_batch, "0", "0..",
      "N > 0: lr is the peak for a global batch of N, scaled linearly to the run's batch x "
      "ranks x accum_steps (peak = lr x that / N; DINO, MAE and the released code use 256, lr then "
      "being their base lr), so a run on more ranks keeps its schedule; min_lr is not scaled; "
      "0 = lr as given"),
    K("min_lr", CFG_T_FLOAT, min_lr, "0", "0..", "learning rate at the end of the cosine"),
    K("warmup", CFG_T_LONG, warmup, "10", "0..", "linear warm-up steps"),
    K("weight_decay", CFG_T_FLOAT, weight_decay, "0.05", "0..", "AdamW decoupled weight decay"),
    K("weight_decay_schedule", CFG_T_ENUM, weight_decay_schedule, "constant", "constant|cosine",
      "weight decay over the run: weight_decay throughout, or DINO's cosine from weight_decay "
      "at step 0 towards weight_decay_end"),
    K("weight_decay_end", CFG_T_FLOAT, weight_decay_end, "0.4", "0..",
      "weight_decay_schedule = cosine: the value the schedule approaches at the last step"),
    K("beta1", CFG_T_FLOAT, beta1, "0.9", "0..1", "AdamW beta1 (below 1)"),
    K("beta2", CFG_T_FLOAT, beta2, "0.95", "0..1", "AdamW beta2 (below 1)"),
    K("adam_eps", CFG_T_FLOAT, adam_eps, "1e-8", "1e-30..", "AdamW epsilon (positive)"),
    K("clip", CFG_T_FLOAT, clip, "3", "0..", "gradient-norm clip (0 = off)"),
    K("clip_mode", CFG_T_ENUM, clip_mode, "global", "global|per_tensor",
      "clip: global = every gradient scaled by clip / norm of them all (torch clip_grad_norm_); "
      "per_tensor = each tensor's gradient by clip / its own norm (DINO's clip_gradients, the released Alice code)"),
    K("on_nonfinite", CFG_T_ENUM, on_nonfinite, "stop", "stop|skip", "NaN/inf loss or gradient: stop the run (exit status 4) or skip the step"),
    K("overlap_allreduce", CFG_T_BOOL, overlap_allreduce, "1", "", "several ranks: average gradient buckets while backward still runs (0 = one all-reduce after backward)"),
    K("allreduce_bucket_mb", CFG_T_FLOAT, allreduce_bucket_mb, "25", "0..", "target size of those buckets in MiB, tensor-aligned, as PyTorch DDP (0 = one per tensor)"),
    K("nccl_timeout_s", CFG_T_FLOAT, nccl_timeout_s, "600", "0..",
      "device = cuda with an NCCL communicator (several ranks): a wait for the GPU longer than this "
      "(a peer rank hung or the network failed), or a communicator set-up that some rank never "
      "joins, ends the job with an error naming the cause; resubmitted, the run resumes from its "
      "last checkpoint (0 = wait forever)"),

    K("ckpt_every", CFG_T_LONG, ckpt_every, "50", "1..", "steps between checkpoints"),
    K("log_every", CFG_T_LONG, log_every, "1", "1..", "steps between log lines"),
    K("keep_ckpts", CFG_T_INT, keep_ckpts, "3", "0..",
      "periodic checkpoints kept (0 = all); one written off schedule (a stop, a preemption, the "
      "end of a run) is kept until a newer one is written"),

    K("pretrained", CFG_T_STRING, pretrained, "", "", "pre-training checkpoint for the encoder ('' = random init)"),
    K("num_classes", CFG_T_INT, num_classes, "14", "2..255", "segmentation classes incl. background"),
    K("feature_size", CFG_T_INT, feature_size, "16", "1..", "UNETR feature size"),
    K("layer_decay", CFG_T_FLOAT, layer_decay, "1", "0.01..1",
      "fine-tuning: layer-wise lr decay (BEiT's, MAE fine-tuning's 0.75): the ViT's block i "
      "learns at lr x layer_decay^(depth - i), its patch embedding at lr x "
      "layer_decay^(depth + 1), its final norm and the CNN decoder at lr; 1 = off"),
    K("sw_overlap", CFG_T_FLOAT, sw_overlap, "0.5", "0..0.95", "sliding-window overlap"),
    K("val_every", CFG_T_LONG, val_every, "50", "1..", "steps between validation passes"),
    K("label_set", CFG_T_ENUM, label_set, "flare", "flare|btcv", "organ label convention"),
    K("eval_protocol", CFG_T_ENUM, eval_protocol, "plain", "plain|flare22",
      "alice eval: plain = every organ's DSC and NSD over the whole volume; flare22 = as the "
      "FLARE 2022 evaluation script: aorta, IVC and esophagus scored on the truth's labelled "
      "axial slices only (its z_lower:z_upper range, which leaves the last labelled slice out), "
      "for numbers comparable with that challenge's tables (docs/FORMAT.md)"),
};

const int config_key_count = (int)(sizeof config_keys / sizeof config_keys[0]);
