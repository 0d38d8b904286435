/* The GEMM's configuration: which micro-kernel runs, and its blocks.
 *
 * The kernel is the best the CPU supports (AVX-512, AVX2+FMA, portable C),
 * unless TG_GEMM_KERNEL or tg_gemm_set_kernel picks a lower one. Blocks
 * come from the cache sizes the CPU reports (cpuid, else sysfs): when op(A)
 * is A transposed, each k step of the AVX2 kernels touches a new cache line
 * of A, so kc lines of A plus a B~ micro-panel must fit L1d (Zen 3: kc <=
 * 256; the AVX-512 tile kept long blocks, measured on Zen 5); when op(A) is
 * read along rows, longer K blocks win (fewer passes over C; up to 832
 * measured best on Zen 3 and Zen 5). B~ fills 3/4 of L2. A kernel family
 * may use a different tile for each case (AVX2: 4x24 on rows, 6x16 down
 * columns: 6 floats per line touched instead of 4; and 6x16 on rows too
 * when N is a multiple of 16 that 24 pads by 5% or more, such as a
 * convolution's 32 or 64 output channels).
 *
 * Everything here is read once per product by the driver (gemm.c); the K
 * blocks it gives decide the float results, tg_gemm_numerics names them. */
#include "gemm_internal.h"
#include "tg_autograd.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- portable kernel: C arrays the compiler may vectorise ---------------- */
enum { PORT_MR = 8, PORT_NR = 8 };

static void ukr_portable(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                         const float *b, ptrdiff_t rsb, float *c, ptrdiff_t ldc,
                         float alpha, float beta)
{
    float acc[PORT_MR][PORT_NR] = {{0}};
    for (int p = 0; p < k; p++, a += csa, b += rsb) {
        float bp[PORT_NR];
        memcpy(bp, b, sizeof bp);
#pragma GCC unroll 8
        for (int i = 0; i < PORT_MR; i++) {
            float ai = a[i * rsa];
#pragma GCC unroll 16
            for (int j = 0; j < PORT_NR; j++)
                acc[i][j] += ai * bp[j];
        }
    }
    for (int i = 0; i < PORT_MR; i++)
        for (int j = 0; j < PORT_NR; j++) {
            float *cij = &c[i * ldc + j];
            *cij = beta == 0.0f ? alpha * acc[i][j]
                                : alpha * acc[i][j] + beta * *cij;
        }
}

static void transpose_portable(const float *src, ptrdiff_t ld, int rows,
                               int cols, float *dst, ptrdiff_t dst_ld)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[c * dst_ld + r] = src[r * ld + c];
}

static int always(void) { return 1; }

static const gemm_kernel kernel_portable = {.name = "portable",
                                            .mr = PORT_MR,
                                            .nr = PORT_NR,
                                            .ukr = ukr_portable,
                                            .transpose = transpose_portable,
                                            .supported = always};

/* Best first. */
static const gemm_kernel *const kernels[] = {
#ifdef TG_GEMM_X86
    &tg_gemm_kernel_avx512,    &tg_gemm_kernel_avx2,
    &tg_gemm_kernel_avx2_4x24, &tg_gemm_kernel_avx2_6x16,
#endif
    &kernel_portable,
};
enum { N_KERNELS = sizeof kernels / sizeof kernels[0] };

/* ---- configuration: kernel and blocking ---------------------------------- */
static struct {
    const gemm_kernel *kern;
    long cache[3]; /* L1d, L2, L3 bytes */
    int blocks_kc; /* TG_GEMM_BLOCKS="kc,nc" (tuning aid), else 0 */
    int blocks_nc;
    size_t buffer_floats; /* per-thread pack buffer: the largest blocks */
    atomic_int pack_a_t;  /* A transposed: pack it (1) or read it in place
                             (0) as TG_GEMM_PACK_A fixes it; -1: measured */
} cfg;
static atomic_int cfg_ready;
/* pack_a_transposed's measurement per kernel: 0 until taken, else 1 + the
 * choice; kept when another kernel is set, so each is measured once. */
static atomic_int pack_a_measured[N_KERNELS];

/* Data cache sizes in bytes (L1d, L2, L3 per cpu0's view) from sysfs;
 * entries it cannot read are left alone. */
static void sysfs_caches(long size[3])
{
    for (int index = 0; index < 8; index++) {
        char path[96], type[16] = "";
        int level = 0;
        long v = 0;
        char unit = 0;
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        int ok = fscanf(f, "%d", &level) == 1;
        fclose(f);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
        if (ok && (f = fopen(path, "r"))) {
            ok = fscanf(f, "%15s", type) == 1;
            fclose(f);
        }
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        if (ok && (f = fopen(path, "r"))) {
            ok = fscanf(f, "%ld%c", &v, &unit) >= 1;
            fclose(f);
        }
        if (!ok || v <= 0 || level < 1 || level > 3 ||
            strcmp(type, "Instruction") == 0)
            continue;
        v *= unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
        size[level - 1] = v;
    }
}

/* L1d, L2, L3: cpuid (x86), else sysfs, else a common desktop's sizes. */
static void cache_sizes(long size[3])
{
    size[0] = size[1] = size[2] = 0;
#ifdef TG_GEMM_X86
    tg_gemm_x86_caches(size);
#endif
    if (!size[0] || !size[1])
        sysfs_caches(size);
    if (size[0] < 16 * 1024 || size[0] > 1024 * 1024)
        size[0] = 32 * 1024;
    if (size[1] < 128 * 1024 || size[1] > 64 * 1024 * 1024)
        size[1] = 512 * 1024;
    if (size[2] < size[1])
        size[2] = 4 * size[1];
}

static int round_down(int v, int m) { return v / m * m > 0 ? v / m * m : m; }

static int clamp_int(long v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* The tile for op(A) read in place with its rows strided (A transposed) or
 * contiguous, and its blocks. A function of the shape class only. */
const gemm_kernel *gemm_tile_for(const gemm_kernel *k, bool a_trans)
{
    return a_trans && k->strided ? k->strided : k;
}

/* Columns of C in tiles nr wide, padding included. */
static int padded(int n, int nr) { return (n + nr - 1) / nr * nr; }

/* The tile for a C of N columns: gemm_tile_for's, except that a family's row
 * tile gives way to its strided one when that pads N by at least 5% less (AVX2:
 * 6x16 for N = 16, 32, 64, where 4x24 fills 67-89% of its lanes; Zen 3, one
 * thread: 6272x64x512 NT 82 GFLOP/s against 76, 25088x32x16 NT 74 against
 * 42). A function of N and the transposes; the arithmetic of an element
 * does not depend on the tile, and the K blocks of rows do not either. */
const gemm_kernel *gemm_tile_for_n(const gemm_kernel *k, bool a_trans, int N)
{
    if (!a_trans && k->strided &&
        20 * padded(N, k->nr) > 21 * padded(N, k->strided->nr))
        return k->strided;
    return gemm_tile_for(k, a_trans);
}

void gemm_blocks_for(const gemm_kernel *k, bool a_trans, int *kc_max, int *nc)
{
    const long l1 = cfg.cache[0], l2 = cfg.cache[1], f = sizeof(float);
    if (a_trans && k->l1_k_blocks_strided) /* a line of A, NR floats of B */
        *kc_max = clamp_int(l1 / (64 + k->nr * f), 128, 832);
    else
        *kc_max = clamp_int(l1 * 26 / 1024, 256, 832);
    *nc = round_down(clamp_int(l2 * 3 / 4 / (*kc_max * f), 1, 4096), k->nr);
    if (cfg.blocks_kc > 0) {
        *kc_max = cfg.blocks_kc;
        *nc = round_down(cfg.blocks_nc, k->nr);
    }
}

/* The blocks of the kernel's three tile classes: t = 0, op(A) read along
 * rows in the row tile; 1, A transposed in the strided tile; 2, rows in the
 * strided tile (gemm_tile_for_n's choice for some N). */
static void tile_class_blocks(int t, int *kc, int *nc)
{
    const gemm_kernel *k = gemm_tile_for(cfg.kern, t != 0);
    gemm_blocks_for(k, t == 1, kc, nc);
}

static void set_blocks(void)
{
    cache_sizes(cfg.cache);
    const char *env = getenv("TG_GEMM_BLOCKS");
    char junk;
    if (!env ||
        sscanf(env, "%d,%d%c", &cfg.blocks_kc, &cfg.blocks_nc, &junk) != 2 ||
        cfg.blocks_kc <= 0 || cfg.blocks_nc <= 0)
        cfg.blocks_kc = cfg.blocks_nc = 0;
    size_t most = 0;
    for (int t = 0; t < 3; t++) {
        int kc, nc;
        tile_class_blocks(t, &kc, &nc);
        size_t need = ((size_t)nc + GEMM_MAX_MR) * (size_t)kc + 16;
        most = need > most ? need : most;
    }
    cfg.buffer_floats = most;
    /* TG_GEMM_PACK_A=0 or 1 fixes the choice (tests, tuning), read again
     * when a kernel is set; otherwise each kernel's is measured at its
     * first use */
    env = getenv("TG_GEMM_PACK_A");
    atomic_store(
        &cfg.pack_a_t,
        env && (env[0] == '0' || env[0] == '1') && !env[1] ? env[0] - '0' : -1);
}

static void init(void)
{
    if (atomic_load(&cfg_ready))
        return;
    for (int i = 0; i < N_KERNELS; i++)
        if (kernels[i]->supported()) {
            cfg.kern = kernels[i];
            break;
        }
    const char *env = getenv("TG_GEMM_KERNEL");
    if (env && *env && !tg_gemm_set_kernel(env))
        fprintf(stderr,
                "tapegrad: TG_GEMM_KERNEL=%s unknown or unsupported here, "
                "using %s\n",
                env, cfg.kern->name);
    set_blocks();
    env = getenv("TG_GEMM_BLOCKS");
    if (env && *env && !cfg.blocks_kc) /* once, as TG_GEMM_KERNEL's */
        fprintf(stderr,
                "tapegrad: TG_GEMM_BLOCKS=%s is not \"kc,nc\" (two whole "
                "numbers above 0): ignored\n",
                env);
    atomic_store(&cfg_ready, 1);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor)) static void init_at_load(void) { init(); }
#endif

const char *tg_gemm_kernel(void)
{
    init();
    return cfg.kern->name;
}

/* The kernel and the K blocks of its three tiles: the K loop sums each
 * block from zero and adds it to C, so the blocks decide the float results
 * (the N blocks and the thread count do not). */
const char *tg_gemm_numerics(void)
{
    static _Thread_local char text[96];
    init();
    int kc[3], nc;
    for (int t = 0; t < 3; t++)
        tile_class_blocks(t, &kc[t], &nc);
    snprintf(text, sizeof text, "%s, K blocks %d/%d/%d", cfg.kern->name, kc[0],
             kc[1], kc[2]);
    return text;
}

bool tg_gemm_set_kernel(const char *name)
{
    for (int i = 0; i < N_KERNELS; i++)
        if (name && strcmp(name, kernels[i]->name) == 0) {
            if (!kernels[i]->supported())
                return false;
            cfg.kern = kernels[i];
            if (atomic_load(&cfg_ready))
                set_blocks();
            return true;
        }
    return false;
}

/* dst[c * dst_ld + r] = src[r * ld + c] for r < rows, c < cols, through
 * the kernel's transpose (8x8 register blocks for AVX2) for whole groups of
 * 8 rows; the kernels' transposes may write past a partial group (packing
 * pads it), so the last rows go one by one. */
void gemm_transpose(const float *src, ptrdiff_t ld, int rows, int cols,
                    float *dst, ptrdiff_t dst_ld)
{
    init();
    int r8 = rows / 8 * 8;
    if (r8 > 0 && cols > 0)
        cfg.kern->transpose(src, ld, r8, cols, dst, dst_ld);
    for (int r = r8; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[c * dst_ld + r] = src[r * ld + c];
}

const gemm_kernel *gemm_config_kernel(void)
{
    init();
    return cfg.kern;
}

size_t gemm_buffer_floats(void) { return cfg.buffer_floats; }

int gemm_pack_a_fixed(void) { return atomic_load(&cfg.pack_a_t); }

atomic_int *gemm_pack_a_measured(const gemm_kernel *base)
{
    int i = 0;
    while (i < N_KERNELS - 1 && kernels[i] != base)
        i++;
    return &pack_a_measured[i];
}
