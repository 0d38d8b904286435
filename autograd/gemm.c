/* Naive reference GEMM: a placeholder until the blocked kernel lands. */
#include "tg_autograd.h"
#include "tg_config.h"

#include <stdlib.h>
#include <string.h>

static int n_threads = 1;

void tg_set_threads(int n) { n_threads = n > 0 ? n : 1; }
int tg_get_threads(void) { return n_threads; }
const char *tg_gemm_kernel(void) { return "portable"; }
bool tg_gemm_set_kernel(const char *name) { return strcmp(name, "portable") == 0; }

void tg_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int p = 0; p < K; p++) {
                float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
    }
}
