/* ck_diff A B BOUND: the largest |a - b| over the weights of two VAE
 * checkpoints (and over their Adam m), printed; exit 1 when it exceeds
 * BOUND, 2 when a file cannot be read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tapegrad.h"

static tg_vae *load(const char *path, tg_optim **opt)
{
    tg_meta m = {0};
    int64_t input, hidden, latent;
    if (tg_checkpoint_read_meta(path, &m) != TG_OK ||
        tg_meta_get_int(&m, "input", &input) != TG_OK ||
        tg_meta_get_int(&m, "hidden", &hidden) != TG_OK ||
        tg_meta_get_int(&m, "latent", &latent) != TG_OK)
        return NULL;
    tg_vae *vae = tg_vae_new((tg_vae_config){.input = (int)input,
                                             .hidden = (int)hidden,
                                             .latent = (int)latent},
                             0);
    *opt = tg_adam_new(tg_vae_params(vae), 1e-3f);
    if (tg_checkpoint_load(path, tg_vae_params(vae), *opt, &m) != TG_OK) {
        tg_optim_free(*opt);
        tg_vae_free(vae);
        return NULL;
    }
    return vae;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) /* NaN counts as infinitely far */
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: ck_diff A B BOUND\n");
        return 2;
    }
    tg_optim *oa, *ob;
    tg_vae *a = load(argv[1], &oa), *b = a ? load(argv[2], &ob) : NULL;
    if (!a || !b) {
        fprintf(stderr, "ck_diff: %s\n", tg_errmsg());
        return 2;
    }
    tg_params *pa = tg_vae_params(a), *pb = tg_vae_params(b);
    size_t n = tg_params_numel(pa);
    if (tg_params_numel(pb) != n) {
        fprintf(stderr, "ck_diff: the models differ in size\n");
        return 2;
    }
    double w = max_diff(tg_params_data(pa), tg_params_data(pb), n);
    double m = max_diff(oa->m, ob->m, n);
    double bound = atof(argv[3]);
    printf("max |weight difference| %.3g, max |Adam m difference| %.3g "
           "(%zu weights, bound %.3g)\n",
           w, m, n, bound);
    tg_optim_free(oa);
    tg_optim_free(ob);
    tg_vae_free(a);
    tg_vae_free(b);
    return w <= bound ? 0 : 1;
}
