/* VAE checkpoints: the model's metadata, the training position, and the
 * checks every value read back passes before anyone uses it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tg_vae.h"

/* The metadata keys this file owns; a caller's extra entries may not use
 * them. */
static const char *const OWN_KEYS[] = {
    "model",         "input",    "hidden",         "latent",
    "step",          "epoch",    "batch_in_epoch", "epoch_seen",
    "epoch_rec",     "epoch_kl", "epoch_skipped",  "noise_rng",
    "weight_layout", "arch",     "likelihood"};

static bool own_key(const char *key)
{
    for (size_t i = 0; i < sizeof OWN_KEYS / sizeof OWN_KEYS[0]; i++)
        if (strcmp(key, OWN_KEYS[i]) == 0)
            return true;
    return false;
}

/* How the tensors lay out their weights (as PyTorch's layers do), the
 * "weight_layout" entry every checkpoint of this library has written. */
static const char *weight_layout(tg_vae_arch arch)
{
    return arch == TG_VAE_CONV
               ? "[out, in] (torch.nn.Linear); [out, in, kh, kw] "
                 "(torch.nn.Conv2d); [in, out, kh, kw] "
                 "(torch.nn.ConvTranspose2d)"
               : "[out, in] (torch.nn.Linear)";
}

tg_status tg_vae_save(const char *path, tg_vae *vae, const tg_optim *opt,
                      const tg_vae_position *pos, const tg_meta *extra)
{
    if (!vae || !path)
        tg_fatal("vae_save", "NULL %s", vae ? "path" : "model");
    tg_params *ps = tg_vae_params(vae);
    tg_params_zero_grad(ps); /* a skipped step's grads are not state */
    const char *bad = tg_params_nonfinite(ps, NULL);
    if (!bad && opt)
        bad = tg_optim_nonfinite(opt);
    if (bad)
        return tg_error(TG_ERR_ARG, "%s: not saved: '%s' is not finite", path,
                        bad);
    tg_meta m = {0};
    for (int i = 0; extra && i < extra->n; i++) {
        if (own_key(extra->key[i]))
            tg_fatal("vae_save", "metadata key '%s' is the model's own",
                     extra->key[i]);
        tg_meta_set(&m, extra->key[i], extra->value[i]);
    }
    tg_meta_set(&m, "model", "vae");
    tg_meta_set(&m, "arch", tg_vae_arch_name(vae->cfg.arch));
    tg_meta_set(&m, "likelihood", tg_vae_likelihood_name(vae->cfg.likelihood));
    tg_meta_set_int(&m, "input", vae->cfg.input);
    tg_meta_set_int(&m, "hidden", vae->cfg.hidden);
    tg_meta_set_int(&m, "latent", vae->cfg.latent);
    tg_meta_set(&m, "weight_layout", weight_layout(vae->cfg.arch));
    tg_meta_set_int(&m, "step", opt ? opt->step : 0);
    if (pos) {
        tg_meta_set_int(&m, "epoch", pos->epoch);
        tg_meta_set_int(&m, "batch_in_epoch", pos->batch);
        tg_meta_set_int(&m, "epoch_seen", pos->seen);
        tg_meta_set_int(&m, "epoch_skipped", pos->skipped);
        tg_meta_set_double(&m, "epoch_rec", pos->rec);
        tg_meta_set_double(&m, "epoch_kl", pos->kl);
        tg_meta_set_rng(&m, "noise_rng", &pos->noise);
    }
    return tg_checkpoint_save(path, ps, opt, &m);
}

/* An integer entry in [lo, hi], or an error naming the file and key. */
static tg_status get_int(const char *path, const tg_meta *m, const char *key,
                         int64_t lo, int64_t hi, int64_t *v)
{
    if (tg_meta_get_int(m, key, v) != TG_OK)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata '%s' is missing or not "
                        "an integer",
                        path, key);
    if (*v < lo || *v > hi)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata '%s' = %lld is outside "
                        "%lld..%lld",
                        path, key, (long long)*v, (long long)lo, (long long)hi);
    return TG_OK;
}

/* The position's values, each in range and consistent with the others.
 * Files written before mid-epoch checkpoints have only "epoch" (finished):
 * they start the next epoch. */
static tg_status read_position(const char *path, const tg_meta *m,
                               tg_vae_position *pos)
{
    tg_status st = get_int(path, m, "epoch", 0, TG_VAE_MAX_EPOCHS, &pos->epoch);
    if (st != TG_OK || !tg_meta_get(m, "batch_in_epoch"))
        return st;
    enum { MAX_BATCH = 1 << 30 }; /* samples per batch: 2^20 at most */
    if ((st = get_int(path, m, "batch_in_epoch", 0, MAX_BATCH, &pos->batch)) !=
            TG_OK ||
        (st = get_int(path, m, "epoch_skipped", 0, pos->batch,
                      &pos->skipped)) != TG_OK ||
        (st = get_int(path, m, "epoch_seen", 0, pos->batch << 20,
                      &pos->seen)) != TG_OK)
        return st;
    if (tg_meta_get_double(m, "epoch_rec", &pos->rec) != TG_OK ||
        tg_meta_get_double(m, "epoch_kl", &pos->kl) != TG_OK ||
        tg_meta_get_rng(m, "noise_rng", &pos->noise) != TG_OK) {
        char why[256]; /* "checkpoint: metadata ...", with the path instead */
        snprintf(why, sizeof why, "%s", tg_errmsg() + strlen("checkpoint: "));
        return tg_error(TG_ERR_FORMAT, "%s: %s", path, why);
    }
    if (pos->seen == 0 && pos->batch > pos->skipped)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata says %lld batches of the "
                        "epoch were trained on but no sample was seen",
                        path, (long long)(pos->batch - pos->skipped));
    return TG_OK;
}

/* The model the metadata describe, into *cfg: a VAE whose sizes are in
 * the limits, whose arch, likelihood and weight layout agree, and whose
 * weights fit in the file. */
static tg_status read_config(const char *path, const tg_meta *m,
                             tg_vae_config *cfg)
{
    const char *model = tg_meta_get(m, "model");
    if (!model || strcmp(model, "vae") != 0)
        return tg_error(TG_ERR_MISMATCH, "%s: model is '%.40s', not 'vae'",
                        path, model ? model : "(missing)");
    int64_t input, hidden, latent;
    tg_status st;
    if ((st = get_int(path, m, "input", 1, TG_VAE_MAX_INPUT, &input)) !=
            TG_OK ||
        (st = get_int(path, m, "hidden", 0, TG_VAE_MAX_HIDDEN, &hidden)) !=
            TG_OK ||
        (st = get_int(path, m, "latent", 1, TG_VAE_MAX_LATENT, &latent)) !=
            TG_OK)
        return st;
    *cfg = (tg_vae_config){(int)input, (int)hidden, (int)latent, TG_VAE_MLP,
                           TG_VAE_BERNOULLI};
    const char *arch = tg_meta_get(m, "arch"); /* absent: an MLP */
    if (arch && !tg_vae_arch_parse(arch, &cfg->arch))
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata 'arch' is '%.40s', not 'mlp' or 'conv'",
                        path, arch);
    /* absent (files from before the continuous Bernoulli): a Bernoulli */
    const char *lik = tg_meta_get(m, "likelihood");
    if (lik && !tg_vae_likelihood_parse(lik, &cfg->likelihood))
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata 'likelihood' is '%.40s', not "
                        "'bernoulli' or 'cb'",
                        path, lik);
    /* absent in files of other writers: the layout is this library's; but
     * a file that says its layout is another ("[in, out]") holds the
     * transposes, which a square weight (hidden 2 x latent) took silently */
    const char *layout = tg_meta_get(m, "weight_layout");
    tg_vae_arch other = cfg->arch == TG_VAE_CONV ? TG_VAE_MLP : TG_VAE_CONV;
    if (layout && strcmp(layout, weight_layout(other)) == 0)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata 'arch' is %s%s, but 'weight_layout' "
                        "is the %s VAE's: the file contradicts itself",
                        path, tg_vae_arch_name(cfg->arch),
                        arch ? "" : " (absent)", tg_vae_arch_name(other));
    if (layout && strcmp(layout, weight_layout(cfg->arch)) != 0)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata 'weight_layout' is '%.40s', not the "
                        "%s VAE's '%s' (its tensors would be read as "
                        "another model)",
                        path, layout, tg_vae_arch_name(cfg->arch),
                        cfg->arch == TG_VAE_CONV ? "[out, in] ..."
                                                 : weight_layout(TG_VAE_MLP));
    if (cfg->arch == TG_VAE_CONV) {
        int s = (int)lround(sqrt((double)input));
        if (s * s != input || s % 4 || hidden != 0)
            return tg_error(TG_ERR_FORMAT,
                            "%s: a conv VAE needs input = side^2 (side a "
                            "multiple of 4) and hidden 0, not input %lld "
                            "hidden %lld",
                            path, (long long)input, (long long)hidden);
    }
    /* The model the metadata describes must be one tg_vae_new makes, and
     * its weights must fit in the file: a crafted header (input 16777216,
     * or hidden 65536 and latent 4096) had vae_score build a model of
     * billions of parameters, and abort, before finding tensors missing. */
    uint64_t numel = tg_vae_numel(*cfg);
    struct stat sb;
    if (stat(path, &sb) != 0)
        sb.st_size = 0;
    if (numel > TG_VAE_MAX_PARAMS || (uint64_t)sb.st_size / 4 < numel)
        return tg_error(
            TG_ERR_FORMAT,
            "%s: metadata describes a %s VAE %lld-%lld-%lld of "
            "%llu parameters (at most %llu), but the file is "
            "%lld bytes",
            path, tg_vae_arch_name(cfg->arch), (long long)input,
            (long long)hidden, (long long)latent, (unsigned long long)numel,
            (unsigned long long)TG_VAE_MAX_PARAMS, (long long)sb.st_size);
    return TG_OK;
}

/* The optimizer's step ("optim.step", the checkpoint's own) and the
 * model's ("step"): each in range, and the same when both are there (Adam's
 * bias correction follows it: a crafted 1000 against 2 resumed a different
 * trajectory). */
static tg_status read_step(const char *path, const tg_meta *m, int64_t *out)
{
    int64_t model_step = 0, step;
    tg_status st;
    if (tg_meta_get(m, "step") &&
        (st = get_int(path, m, "step", 0, TG_OPTIM_MAX_STEP, &model_step)) !=
            TG_OK)
        return st;
    step = model_step;
    if (tg_meta_get(m, "optim.step")) {
        if ((st = get_int(path, m, "optim.step", 0, TG_OPTIM_MAX_STEP,
                          &step)) != TG_OK)
            return st;
        if (tg_meta_get(m, "step") && step != model_step)
            return tg_error(TG_ERR_FORMAT,
                            "%s: metadata 'step' = %lld but 'optim.step' = "
                            "%lld",
                            path, (long long)model_step, (long long)step);
    }
    *out = step;
    return TG_OK;
}

tg_status tg_vae_read_info(const char *path, tg_vae_info *info)
{
    if (!path || !info)
        tg_fatal("vae_read_info", "NULL %s", path ? "info" : "path");
    memset(info, 0, sizeof *info);
    tg_meta *m = &info->meta;
    tg_status st = tg_checkpoint_read_meta(path, m);
    if (st != TG_OK)
        return st;
    int64_t step = 0;
    if ((st = read_config(path, m, &info->cfg)) != TG_OK ||
        (st = read_step(path, m, &step)) != TG_OK)
        return st;
    info->step = step;
    if (tg_meta_get(m, "epoch")) {
        info->has_position = true;
        st = read_position(path, m, &info->pos);
    }
    return st;
}

tg_status tg_vae_load(const char *path, tg_vae *vae, tg_optim *opt,
                      tg_vae_info *info)
{
    if (!vae || !path)
        tg_fatal("vae_load", "NULL %s", vae ? "path" : "model");
    tg_vae_info local, *in = info ? info : &local;
    tg_status st = tg_vae_read_info(path, in);
    if (st != TG_OK)
        return st;
    const int have[3] = {in->cfg.input, in->cfg.hidden, in->cfg.latent};
    const int want[3] = {vae->cfg.input, vae->cfg.hidden, vae->cfg.latent};
    const char *names[3] = {"input", "hidden", "latent"};
    for (int i = 0; i < 3; i++)
        if (have[i] != want[i])
            return tg_error(TG_ERR_MISMATCH,
                            "%s: checkpoint has %s %d but "
                            "the model has %d",
                            path, names[i], have[i], want[i]);
    if (in->cfg.arch != vae->cfg.arch)
        return tg_error(TG_ERR_MISMATCH,
                        "%s: checkpoint has arch %s but the model is %s", path,
                        tg_vae_arch_name(in->cfg.arch),
                        tg_vae_arch_name(vae->cfg.arch));
    if (in->cfg.likelihood != vae->cfg.likelihood)
        return tg_error(TG_ERR_MISMATCH,
                        "%s: checkpoint has likelihood %s but the model has %s",
                        path, tg_vae_likelihood_name(in->cfg.likelihood),
                        tg_vae_likelihood_name(vae->cfg.likelihood));
    tg_params *ps = tg_vae_params(vae);
    tg_meta loaded;
    if ((st = tg_checkpoint_load(path, ps, opt, &loaded)) != TG_OK) {
        /* tensors missing, extra or of other shapes ("(parameters: ..."),
         * though the metadata describe this model, loaded without an
         * optimizer (tg_vae_open's way): say so, since "the model" is the
         * metadata's (vae_score builds it from them, and
         * reported "[32, 784] in the model" of a file whose metadata alone
         * said hidden 32) */
        if (st == TG_ERR_MISMATCH && !opt &&
            strstr(tg_errmsg(), "(parameters: ")) {
            char why[400];
            snprintf(why, sizeof why, "%s", tg_errmsg());
            return tg_error(st,
                            "%s; its metadata describe that model (%s, "
                            "input %d, hidden %d, latent %d), its tensors "
                            "another",
                            why, tg_vae_arch_name(in->cfg.arch), in->cfg.input,
                            in->cfg.hidden, in->cfg.latent);
        }
        return st;
    }
    /* the tensors' file must be the one whose metadata were checked: a
     * save over path in between had mixed two checkpoints */
    if (!tg_meta_equal(&loaded, &in->meta))
        return tg_error(TG_ERR_IO,
                        "%s: changed while it was being read (another "
                        "process saving it?): try again",
                        path);
    tg_params_zero_grad(ps);
    const char *bad = tg_params_nonfinite(ps, NULL);
    if (bad)
        return tg_error(TG_ERR_FORMAT, "%s: weights of '%s' are not finite",
                        path, bad);
    if (opt && (bad = tg_optim_nonfinite(opt)))
        return tg_error(TG_ERR_FORMAT,
                        "%s: optimizer state of '%s' is not "
                        "finite",
                        path, bad);
    if (opt)
        opt->step = in->step;
    return TG_OK;
}

tg_status tg_vae_open(const char *path, tg_vae **vae, tg_vae_info *info)
{
    if (!path || !vae)
        tg_fatal("vae_open", "NULL %s",
                 path ? "vae (it receives the model)" : "path");
    tg_vae_info local, *in = info ? info : &local;
    *vae = NULL;
    tg_status st = tg_vae_read_info(path, in);
    if (st != TG_OK)
        return st;
    tg_vae *v = tg_vae_new(in->cfg, 0);
    if ((st = tg_vae_load(path, v, NULL, in)) != TG_OK) {
        tg_vae_free(v);
        return st;
    }
    *vae = v;
    return TG_OK;
}
