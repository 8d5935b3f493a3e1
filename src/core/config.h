/* Job configuration: `key = value` files (jobs/<name>.cfg, '#' comments) plus `key=value` overrides
 * on the command line. Every key is declared once in the registry (config_keys.c) with its
 * type, default, valid values and help; an unknown key or a bad value is an error naming the
 * key, the file and line, and what is valid. */
#ifndef ALICE_CONFIG_H
#define ALICE_CONFIG_H

#include <stddef.h>

#define CFG_STR 256

typedef struct Config {
    /* run */
    char device[CFG_STR];         /* cpu | cuda */
    char precision[CFG_STR];      /* fp32 | bf16 (bf16 GEMM operands and activations, fp32 master weights) */
    int bf16_activations;         /* bf16: transformer activations stored in bf16 */
    int bf16_branch_out;          /* bf16 activations: proj/fc2 outputs bf16, added in LayerNorm */
    int bf16_weight_copy;         /* cuda bf16: weights rounded once per change, not per GEMM */
    int tf32;                     /* cuda fp32 GEMMs/convolutions may use TF32 tensor cores */
    int gemm_autotune;            /* cuda: time cuBLASLt's candidate algorithms per GEMM shape */
    int conv_autotune;            /* cuda: cuDNN's deterministic convolution algorithms timed per shape */
    char cuda_graph[CFG_STR];     /* cuda training step replayed as one CUDA graph: auto | 1 | 0 (train/step_graph.h) */
    char attention_kernel[CFG_STR]; /* cuda attention: auto | gemm | fused (flash kernels) | cudnn */
    char instnorm_kernel[CFG_STR];  /* cuda instance norm: own (kernels) | cudnn (batch norm API) */
    char conv_wgrad_layout[CFG_STR]; /* cuda conv weight gradients: ncdhw | ndhwc */
    char conv_wgrad_kernel[CFG_STR]; /* cuda 3x3x3 conv wgrad, <= 32 channels: own | cudnn */
    char pointwise_conv[CFG_STR];  /* cuda 1x1x1 convolutions, <= 32 channels: cudnn | own */
    char run_dir[CFG_STR];
    long seed;
    int threads;                  /* OpenMP threads per rank, 0 = all cores / ranks per node */

    /* data */
    char data[CFG_STR];           /* dataset.h5, or "synthetic" for the built-in source */
    int crop[3];                  /* crop size X,Y,Z in voxels */
    float window_lo, window_hi;   /* HU window mapped to [0, 1] at load time */
    int prefetch;                 /* prefetch threads */
    int cache_mb;                 /* loader volume cache limit in MiB (0 = no cache, -1 = unlimited) */
    char data_device[CFG_STR];    /* cpu | gpu: where crops and augmentations are computed */
    int gpu_cache_mb;             /* data_device = gpu: device memory for volumes, MiB */
    float pos_fraction;           /* fine-tuning crops centred on foreground: pos / (pos + neg) */
    int crops_per_case;           /* fine-tuning crops per case drawn (MONAI num_samples) */
    char crop_sampler[CFG_STR];   /* fine-tuning crop centres: posneg | classes */
    char class_ratios[CFG_STR];   /* classes: weight per class, background first ("" = equal) */
    char matcher[CFG_STR];        /* anatomical matcher of pre-training pairs */
    int synthetic_cases;          /* phantoms generated in memory when data = synthetic */
    int fold;                     /* validation fold for fine-tuning, -1 = none */
    int num_folds;
    float spacing[3];             /* pack target spacing X,Y,Z mm */

    /* encoder (ViT) */
    int patch;
    int embed_dim;
    int depth;
    int heads;
    int mlp_dim;
    /* decoder */
    int dec_dim;
    int dec_depth;
    int dec_heads;
    int dec_mlp_dim;
    float drop_path;              /* stochastic depth of the trained encoder's last block */
    float mask_ratio;
    char mask_shape[CFG_STR];     /* tokens | z_tubes */
    char rec_region[CFG_STR];     /* l_r over masked | all tokens */
    int norm_pix;                 /* per-patch normalised reconstruction targets */

    /* Alice heads and CASA */
    char method[CFG_STR];         /* mae | alice */
    int head_hidden;
    int head_bottleneck;
    int head_out;
    int head_norm_last;           /* heads' last weight rows l2-normalised (DINO) */
    long freeze_last_layer;       /* steps the head's last layer sits out AdamW (DINO) */
    char head_init[CFG_STR];      /* xavier | dino */
    int lr_reference_batch;       /* lr is for this global batch (0: as given) */
    int casa_dim;
    int inter_volume;             /* Q and K from two volumes (1) or one (0) */
    float key_jitter;             /* K's centre moved by U(-j, j) x crop per axis */
    char key_crop[CFG_STR];       /* K's crop at a volume edge: shift | pad */
    int pair_redraws;             /* query crops drawn again while the match is outside K */
    char intact_aug[CFG_STR];     /* the intact views' augmentation: strong | none */
    int use_dv;                   /* l_dv on/off */
    int use_casa;                 /* CASA on, or direct V/Y similarity */
    char casa_layer[CFG_STR];     /* single | transformer */
    char casa_kv[CFG_STR];        /* CASA's keys/values read: heads | features */
    char cls_source[CFG_STR];     /* l_dv's [cls]: decoder | encoder */
    int casa_heads, casa_ffn_dim; /* casa_layer = transformer */
    float w_rec, w_dv, w_st;
    float ema_start, ema_end;     /* cosine momentum schedule */
    char teacher_decoder[CFG_STR];   /* full | embed: the teacher's path from Y to psi */
    char align_loss[CFG_STR];     /* cosine | dino: the form of l_dv and l_st */
    float teacher_temp, student_temp;   /* dino: softmax temperatures */
    float warmup_teacher_temp;          /* dino: the teacher's at the start of its warm-up */
    long warmup_teacher_temp_steps;     /* dino: warm-up length (0: none) */
    float center_momentum;        /* dino: EMA momentum of the teacher centers */

    /* optimisation */
    int batch;                    /* per rank (per micro-batch) */
    int accum_steps;              /* micro-batches per optimiser step (gradient accumulation) */
    long steps;
    float lr;
    float min_lr;
    long warmup;
    float weight_decay;
    char weight_decay_schedule[CFG_STR];   /* constant | cosine (DINO's, to weight_decay_end) */
    float weight_decay_end;
    float beta1, beta2;
    float adam_eps;
    float clip;                   /* gradient norm limit, 0 = off */
    char clip_mode[CFG_STR];      /* global | per_tensor */
    char on_nonfinite[CFG_STR];   /* stop | skip */
    int overlap_allreduce;        /* gradient all-reduce in buckets during backward */
    float allreduce_bucket_mb;    /* target bucket size of that all-reduce */
    float nccl_timeout_s;         /* cuda + NCCL: a host wait this long without progress ends the job (0 = never) */

    /* bookkeeping */
    long ckpt_every;
    long log_every;
    int keep_ckpts;               /* how many periodic checkpoints to keep, 0 = all */

    /* fine-tuning, inference, evaluation */
    char pretrained[CFG_STR];     /* pre-training checkpoint, "" = random init */
    int num_classes;
    int feature_size;
    float layer_decay;            /* fine-tuning: layer-wise lr decay (1 = off) */
    float sw_overlap;
    long val_every;
    char label_set[CFG_STR];      /* flare | btcv */
    char eval_protocol[CFG_STR];  /* alice eval: plain | flare22 (eval/metrics.h) */

    /* Not a key (no text, never set by a job file): the voxel spacing X,Y,Z mm of the packed
     * data set a fine-tuning run trains on, 0 with synthetic data; its checkpoints store it
     * (attribute data_spacing) so alice infer can refuse data at another spacing. */
    double data_spacing[3];
} Config;

typedef enum { CFG_T_INT, CFG_T_LONG, CFG_T_FLOAT, CFG_T_STRING, CFG_T_BOOL, CFG_T_ENUM,
               CFG_T_INT3, CFG_T_FLOAT3 } ConfigType;

typedef struct {
    const char *name;
    ConfigType type;
    size_t offset;
    const char *default_value;
    const char *valid;            /* enum: "a|b|c"; numbers: "min..max" (either may be empty) */
    const char *help;
} ConfigKey;

extern const ConfigKey config_keys[];
extern const int config_key_count;

/* Defaults of every key. */
void config_defaults(Config *c);
/* Applies a job file; errors name the file and line. */
void config_load_file(Config *c, const char *path);
/* Applies one "key=value" (origin names where it came from, e.g. "command line"). */
void config_set(Config *c, const char *key, const char *value, const char *origin, int line);
/* Resolved configuration as `key = value` lines (caller frees). */
char *config_to_text(const Config *c);
/* Parses text from config_to_text (checkpoints store it) into c; keys this registry does not
 * know (a checkpoint of another alice version) are skipped with a warning. */
void config_from_text(Config *c, const char *text, const char *origin);
/* Cross-key checks (crop divisible by patch, width by heads, ...); errors name the keys. */
void config_validate(const Config *c);
/* config_validate, then the pre-training method's own keys (its masks, MAE decoder and CASA
 * heads), which fine-tuning and inference never read. */
void config_validate_pretraining(const Config *c);
/* The double of the shortest decimal that reads back as v: the value of the text a float key
 * was given as (0.6, not 0.6000000238...), for arithmetic that must follow a reference
 * computing in double from that text (MONAI's window interval). */
double config_float_decimal(float v);
const ConfigKey *config_find_key(const char *name);

#endif
