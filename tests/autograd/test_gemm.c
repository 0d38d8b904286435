/* tg_gemm against a double-precision reference, for every micro-kernel this
 * CPU can run: all transpose variants, edge tiles, strided operands,
 * alpha/beta cases, beta = 0 over NaN, and bit-identical results for 1 and
 * 2 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

/* Every kernel the CPU can run is forced in turn: each tile, and "avx2",
 * which picks one of its two tiles per call. */
static const char *const kernel_names[] = {"avx512", "avx2", "avx2-4x24",
                                           "avx2-6x16", "portable"};
enum { N_NAMES = sizeof kernel_names / sizeof kernel_names[0] };

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rand_int(int lo, int hi)
{
    return lo + (int)(next_u64() % (uint64_t)(hi - lo + 1));
}
static float rand_float(void)
{
    return (float)((double)(next_u64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_matrix(size_t n)
{
    float *m = malloc(n * sizeof(float) + 1);
    assert_non_null(m);
    for (size_t i = 0; i < n; i++)
        m[i] = rand_float();
    return m;
}

/* One case: C[M,N] (row stride ldc) = alpha op(A) op(B) + beta C, checked
 * element-wise against a double sum with a forward-error bound
 * (K+2) u (|alpha| sum|a||b| + |beta c|), and the padding beyond N
 * unchanged, for every kernel this CPU can run (the reference is computed
 * once and shared; under valgrind, for one of them, in turn).
 */
/* Under valgrind (TG_TEST_QUICK=1, set by meson test --setup valgrind) the
 * sweeps run a subset: emulated AVX code runs some 400x slower, and the full
 * sweeps run natively and under ASan/UBSan. */
static bool quick(void)
{
    const char *q = getenv("TG_TEST_QUICK");
    return q && *q && *q != '0';
}

/* can_run[k]: whether this CPU runs kernel_names[k] (asked once). Returns
 * how many it runs. */
static bool can_run[N_NAMES];

static int kernels_available(void)
{
    static int avail = -1;
    if (avail < 0) {
        char saved[32];
        snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
        avail = 0;
        for (int k = 0; k < N_NAMES; k++)
            avail += can_run[k] = tg_gemm_set_kernel(kernel_names[k]);
        assert_true(tg_gemm_set_kernel(saved));
    }
    return avail;
}

/* Whether case `item` runs on the rank-th available kernel (of avail): all
 * of them natively; under valgrind one each, in turn, so that every kernel
 * still meets every kind of case across a sweep. */
static bool case_runs(int rank, int avail, long item)
{
    if (!quick() || avail <= 1)
        return true;
    return item % avail == rank;
}

static void check_case(bool ta, bool tb, int M, int N, int K, float alpha,
                       float beta, int pad, bool nan_c)
{
    static long case_no;
    long item = case_no++;
    int avail = kernels_available(), rank = 0;
    int a_rows = ta ? K : M, a_cols = ta ? M : K;
    int b_rows = tb ? N : K, b_cols = tb ? K : N;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
    if (lda < 1)
        lda = 1;
    if (ldb < 1)
        ldb = 1;
    if (ldc < 1)
        ldc = 1;
    float *A = random_matrix((size_t)a_rows * lda);
    float *B = random_matrix((size_t)b_rows * ldb);
    float *C = random_matrix((size_t)M * ldc);
    float *C0 = malloc((size_t)M * ldc * sizeof(float) + 1);
    double *ref = malloc(((size_t)M * N + 1) * sizeof(double));
    double *bound = malloc(((size_t)M * N + 1) * sizeof(double));
    assert_non_null(C0);
    assert_non_null(ref);
    assert_non_null(bound);
    if (nan_c)
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            if (i % (size_t)ldc < (size_t)N)
                C[i] = NAN;
    memcpy(C0, C, (size_t)M * ldc * sizeof(float));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0, mag = 0;
            for (int p = 0; p < K; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                sum += a * b;
                mag += fabs(a * b);
            }
            double c0 = C0[(size_t)i * ldc + j];
            ref[(size_t)i * N + j] =
                alpha * sum + (beta == 0.0f ? 0.0 : beta * c0);
            bound[(size_t)i * N + j] =
                (K + 2) * 1.2e-7 *
                    (fabs(alpha) * mag + (beta == 0.0f ? 0 : fabs(beta * c0))) +
                1e-30;
        }

    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    for (int k = 0; k < N_NAMES; k++) {
        if (!can_run[k] || !case_runs(rank++, avail, item))
            continue;
        /* under valgrind a transposed A is packed or read in place in
         * turn, so each kernel meets both (natively: the measured choice) */
        if (quick())
            setenv("TG_GEMM_PACK_A", item / avail % 2 ? "1" : "0", 1);
        assert_true(tg_gemm_set_kernel(kernel_names[k]));
        unsetenv("TG_GEMM_PACK_A");
        memcpy(C, C0, (size_t)M * ldc * sizeof(float));
        tg_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                double want = ref[(size_t)i * N + j],
                       tol = bound[(size_t)i * N + j],
                       got = C[(size_t)i * ldc + j];
                if (!(fabs(got - want) <= tol)) {
                    print_error(
                        "%s ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g "
                        "pad=%d: C[%d,%d] = %.9g, want %.9g (bound %.3g)\n",
                        kernel_names[k], ta, tb, M, N, K, alpha, beta, pad, i,
                        j, got, want, tol);
                    fail();
                }
            }
            for (int j = N; j < ldc; j++)
                assert_memory_equal(&C[(size_t)i * ldc + j],
                                    &C0[(size_t)i * ldc + j], sizeof(float));
        }
    }
    assert_true(tg_gemm_set_kernel(saved));
    free(A);
    free(B);
    free(C);
    free(C0);
    free(ref);
    free(bound);
}

static void all_variants(int M, int N, int K, float alpha, float beta, int pad,
                         bool nan_c)
{
    for (int t = 0; t < 4; t++)
        check_case(t & 1, t & 2, M, N, K, alpha, beta, pad, nan_c);
}

/* Runs body once per kernel the CPU supports, restoring the default. */
static int for_kernels(void (*body)(void), int n)
{
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int ran = 0;
    for (int k = 0; k < n; k++) {
        /* under valgrind, each way of reading a transposed A in turn (see
         * check_case) */
        if (quick())
            setenv("TG_GEMM_PACK_A", k % 2 ? "1" : "0", 1);
        bool set = tg_gemm_set_kernel(kernel_names[k]);
        unsetenv("TG_GEMM_PACK_A");
        if (!set)
            continue;
        assert_string_equal(tg_gemm_kernel(), kernel_names[k]);
        body();
        ran++;
    }
    assert_true(tg_gemm_set_kernel(saved));
    return ran;
}

static void edge_shapes_body(void)
{
    static const int sizes[] = {1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 33, 47, 65};
    int n = sizeof sizes / sizeof sizes[0], step = quick() ? 3 : 1;
    for (int i = 0; i < n; i += step)
        for (int j = 0; j < n; j += 2 * step)
            all_variants(sizes[i], sizes[j], sizes[(i + j) % n], 1.0f, 0.0f, 0,
                         false);
    all_variants(1, 1, 1, 1.0f, 0.0f, 0, false);
    all_variants(1, 1, 1, -2.0f, 0.5f, 3, false);
}

static void
test_gemm_every_kernel_matches_reference_on_edge_shapes(void **state)
{
    (void)state;
    edge_shapes_body();
}

static void random_shapes_body(void)
{
    static const float alphas[] = {1.0f, -1.5f, 0.25f};
    static const float betas[] = {0.0f, 1.0f, -0.5f};
    for (int r = 0; r < (quick() ? 4 : 12); r++) {
        int M = rand_int(1, 90), N = rand_int(1, 140), K = rand_int(1, 200);
        all_variants(M, N, K, alphas[r % 3], betas[(r / 3) % 3], rand_int(0, 5),
                     false);
    }
}

static void test_gemm_random_shapes_alpha_beta_and_strides(void **state)
{
    (void)state;
    random_shapes_body();
}

/* Crosses the K and N cache blocks (several K blocks accumulate), with B
 * packed and read in place (small M), and C computed as C^T (narrow N). */
static void large_body(void)
{
    /* a Dense input gradient dy.W: C^T in two K blocks, one per thread */
    check_case(false, false, 128, 400, 784, 1.0f, 0.0f, 0, false);
    check_case(false, false, 128, 400, 784, 1.0f, 1.0f, 3, false);
    check_case(false, true, 131, 300, 1100, 1.0f, 0.0f, 1, false);
    check_case(true, false, 261, 67, 1030, 0.5f, 2.0f, 0, false);
    if (quick())
        return;
    check_case(false, false, 70, 530, 600, 1.0f, 1.0f, 4, false);
    check_case(true, true, 300, 45, 520, -1.0f, 0.0f, 0, false);
    check_case(false, false, 40, 100, 1700, 1.0f, -1.0f, 3, false);
    check_case(true, false, 20, 77, 900, 1.0f, 0.0f, 0, false);
    check_case(false, true, 200, 12, 900, 2.0f, 0.5f, 1, false);
    check_case(true, true, 150, 20, 1000, 1.0f, 0.0f, 0, true);
}

static void test_gemm_large_shapes_cross_cache_blocks(void **state)
{
    (void)state;
    large_body();
}

static void nan_body(void)
{
    all_variants(37, 45, 29, 1.0f, 0.0f, 2, true);
    all_variants(3, 200, 700, 2.0f, 0.0f, 0, true);
}

static void test_gemm_beta_zero_ignores_nan_in_c(void **state)
{
    (void)state;
    nan_body();
}

static void test_gemm_k_zero_scales_c(void **state)
{
    (void)state;
    float A[1] = {NAN}, B[1] = {NAN};
    float C[6] = {1, 2, 3, 4, 5, 6};
    tg_gemm(false, false, 2, 3, 0, 1.0f, A, 1, B, 3, 2.0f, C, 3);
    for (int i = 0; i < 6; i++)
        assert_float_equal(C[i], 2.0f * (float)(i + 1), 0.0f);
    float D[4] = {NAN, NAN, NAN, NAN};
    tg_gemm(true, true, 2, 2, 0, 1.0f, A, 2, B, 1, 0.0f, D, 2);
    for (int i = 0; i < 4; i++)
        assert_float_equal(D[i], 0.0f, 0.0f);
    check_case(false, false, 5, 9, 0, 1.0f, -3.0f, 1, false);
}

static void threads_body(void)
{
    static const int shapes[][3] = {{128, 784, 400},
                                    {400, 128, 784},
                                    {131, 517, 301},
                                    {517, 33, 1100},
                                    {64, 64, 64}};
    for (int s = quick() ? 4 : 0; s < 5; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        /* alpha 1 too: a Dense input gradient (NN, computed as C^T) then
         * splits K over the two threads, each block's sums added in turn */
        for (int t = 0; t < 12; t++) {
            bool ta = t & 1, tb = t & 2;
            static const float ab[3][2] = {{0.75f, 0.5f}, {1, 0}, {1, 1}};
            float alpha = ab[t / 4][0], beta = ab[t / 4][1];
            float *A = random_matrix((size_t)M * K),
                  *B = random_matrix((size_t)K * N);
            float *C1 = random_matrix((size_t)M * N);
            float *C2 = malloc((size_t)M * N * sizeof(float));
            float *C0 = malloc((size_t)M * N * sizeof(float));
            assert_non_null(C2);
            assert_non_null(C0);
            memcpy(C2, C1, (size_t)M * N * sizeof(float));
            memcpy(C0, C1, (size_t)M * N * sizeof(float));
            tg_set_threads(1);
            tg_gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta,
                    C1, N);
            tg_set_threads(2);
            tg_gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta,
                    C2, N);
            assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
            /* The default count adapts to the machine's load (1 or all
             * cores): the same bits again. */
            memcpy(C2, C0, (size_t)M * N * sizeof(float));
            tg_set_threads(0);
            tg_gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta,
                    C2, N);
            assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
            free(A);
            free(B);
            free(C1);
            free(C2);
            free(C0);
        }
    }
}

static void test_gemm_bit_identical_for_one_and_two_threads(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    assert_true(for_kernels(threads_body, N_NAMES) >= 1);
    tg_set_threads(0);
    assert_true(tg_get_threads() >= 1);
    tg_set_threads(saved);
}

/* "avx2" runs rows of C in 6x16 tiles when N is 16, 32 or 64 (4x24 would
 * pad them) and in 4x24 otherwise; the convolutions rely on an element's
 * bits not depending on the tile (their chunks change M, not N). Both
 * tiles, pinned, give the same bits as "avx2" on such shapes, across K
 * blocks. */
static void test_gemm_avx2_tiles_give_the_same_bits(void **state)
{
    (void)state;
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    if (!tg_gemm_set_kernel("avx2"))
        skip();
    static const int shapes[][3] = {{100, 64, 900}, {37, 32, 16}, {9, 16, 70}};
    for (int s = 0; s < 3; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int tb = 0; tb < 2; tb++) {
            float *A = random_matrix((size_t)M * K),
                  *B = random_matrix((size_t)K * N), *C[3];
            static const char *const names[] = {"avx2", "avx2-4x24",
                                                "avx2-6x16"};
            for (int k = 0; k < 3; k++) {
                C[k] = malloc((size_t)M * N * sizeof(float));
                assert_non_null(C[k]);
                assert_true(tg_gemm_set_kernel(names[k]));
                tg_gemm(false, tb, M, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f,
                        C[k], N);
            }
            assert_memory_equal(C[0], C[1], (size_t)M * N * sizeof(float));
            assert_memory_equal(C[0], C[2], (size_t)M * N * sizeof(float));
            for (int k = 0; k < 3; k++)
                free(C[k]);
            free(A);
            free(B);
        }
    }
    assert_true(tg_gemm_set_kernel(saved));
}

/* With A transposed the driver packs A's row panels or reads them in place,
 * as measured on the CPU (gemm.c, pack_a_transposed); TG_GEMM_PACK_A=0/1
 * fixes the choice, read again when a kernel is set. Both, and the
 * measured default, give the same bits on every kernel: odd M (a partial
 * panel), K over one K block, B either way, C^T mode (N < M). */
static void test_gemm_packed_a_gives_the_same_bits(void **state)
{
    (void)state;
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    static const int shapes[][3] = {
        {101, 64, 900}, {37, 48, 16}, {300, 20, 130}, {9, 40, 70}};
    static const char *const modes[] = {"0", "1", NULL};
    int avail = kernels_available(), rank = -1;
    for (int k = 0; k < N_NAMES; k++) {
        if (!can_run[k])
            continue;
        rank++;
        for (int s = 0; s < 4; s++)
            for (int tb = 0; tb < 2; tb++) {
                if (!case_runs(rank, avail, 2 * s + tb))
                    continue;
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                float *A = random_matrix((size_t)M * K),
                      *B = random_matrix((size_t)K * N), *C[3];
                for (int m = 0; m < 3; m++) {
                    C[m] = malloc((size_t)M * N * sizeof(float));
                    assert_non_null(C[m]);
                    if (modes[m])
                        setenv("TG_GEMM_PACK_A", modes[m], 1);
                    else
                        unsetenv("TG_GEMM_PACK_A");
                    assert_true(tg_gemm_set_kernel(kernel_names[k]));
                    tg_gemm(true, tb, M, N, K, 1.0f, A, M, B, tb ? K : N, 0.0f,
                            C[m], N);
                }
                assert_memory_equal(C[0], C[1], (size_t)M * N * sizeof(float));
                assert_memory_equal(C[0], C[2], (size_t)M * N * sizeof(float));
                for (int m = 0; m < 3; m++)
                    free(C[m]);
                free(A);
                free(B);
            }
    }
    unsetenv("TG_GEMM_PACK_A");
    assert_true(tg_gemm_set_kernel(saved));
}

/* Two application threads calling tg_gemm at once (each with its own pack
 * buffer) get exactly what one thread gets calling them in turn. */
typedef struct {
    int M, N, K;
    const float *A, *B;
    float *C;
} call;

static void *run_call(void *arg)
{
    call *c = arg;
    for (int rep = 0; rep < (quick() ? 4 : 20); rep++)
        tg_gemm(false, true, c->M, c->N, c->K, 1.0f, c->A, c->K, c->B, c->K,
                0.0f, c->C, c->N);
    return NULL;
}

static void test_gemm_concurrent_callers_match_serial_calls(void **state)
{
    (void)state;
    call calls[2] = {{96, 200, 300, NULL, NULL, NULL},
                     {130, 70, 900, NULL, NULL, NULL}};
    float *serial[2];
    for (int i = 0; i < 2; i++) {
        call *c = &calls[i];
        c->A = random_matrix((size_t)c->M * c->K);
        c->B = random_matrix((size_t)c->N * c->K);
        c->C = random_matrix((size_t)c->M * c->N);
        serial[i] = random_matrix((size_t)c->M * c->N);
        tg_gemm(false, true, c->M, c->N, c->K, 1.0f, c->A, c->K, c->B, c->K,
                0.0f, serial[i], c->N);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, run_call, &calls[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_memory_equal(calls[i].C, serial[i],
                            (size_t)calls[i].M * calls[i].N * sizeof(float));
        free((void *)calls[i].A);
        free((void *)calls[i].B);
        free(calls[i].C);
        free(serial[i]);
    }
}

static void test_gemm_set_kernel_refuses_unknown_names(void **state)
{
    (void)state;
    const char *before = tg_gemm_kernel();
    assert_false(tg_gemm_set_kernel("sse9"));
    assert_false(tg_gemm_set_kernel(""));
    assert_false(tg_gemm_set_kernel("AVX2"));
    assert_string_equal(tg_gemm_kernel(), before);
    assert_true(tg_gemm_set_kernel("portable"));
    assert_string_equal(tg_gemm_kernel(), "portable");
    /* the numerics name the kernel, so ranks can compare them */
    char portable[96];
    snprintf(portable, sizeof portable, "%s", tg_gemm_numerics());
    assert_true(strncmp(portable, "portable, K blocks ", 19) == 0);
    assert_true(tg_gemm_set_kernel(before));
    assert_true(strncmp(tg_gemm_numerics(), before, strlen(before)) == 0);
    if (strcmp(before, "portable") != 0)
        assert_string_not_equal(tg_gemm_numerics(), portable);
}

/* An argument selects the tests whose names match it (cmocka's filter). */
/* A size within 128 of INT_MAX is refused: the tiles were counted past the
 * last row (M rounded up to MR, ir + MR) in int, which wrapped. Refused
 * before A, B or C is read, so a few floats stand for them. */
static float few[64];
static void gemm_rows_near_int_max(void)
{
    tg_gemm(false, false, INT_MAX - 10, 1, 1, 1.0f, few, 1, few, 1, 0.0f, few,
            1);
}
static void gemm_k_near_int_max(void)
{
    tg_gemm(true, false, 1, 1, INT_MAX - 1, 1.0f, few, 1, few, 1, 0.0f, few, 1);
}

static void test_gemm_sizes_near_int_max_abort(void **state)
{
    (void)state;
    expect_abort(gemm_rows_near_int_max, "tg_gemm:", "M=2147483637",
                 "at most 2147483519");
    expect_abort(gemm_k_near_int_max, "tg_gemm:", "K=2147483646",
                 "at most 2147483519");
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_gemm_every_kernel_matches_reference_on_edge_shapes),
        cmocka_unit_test(test_gemm_random_shapes_alpha_beta_and_strides),
        cmocka_unit_test(test_gemm_large_shapes_cross_cache_blocks),
        cmocka_unit_test(test_gemm_beta_zero_ignores_nan_in_c),
        cmocka_unit_test(test_gemm_k_zero_scales_c),
        cmocka_unit_test(test_gemm_bit_identical_for_one_and_two_threads),
        cmocka_unit_test(test_gemm_avx2_tiles_give_the_same_bits),
        cmocka_unit_test(test_gemm_packed_a_gives_the_same_bits),
        cmocka_unit_test(test_gemm_concurrent_callers_match_serial_calls),
        cmocka_unit_test(test_gemm_set_kernel_refuses_unknown_names),
        cmocka_unit_test(test_gemm_sizes_near_int_max_abort),
    };
    return cmocka_run_group_tests_name("gemm", tests, NULL, NULL);
}
