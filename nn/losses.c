/* Losses: a scalar [1], the mean over the rows of a batch of a per-row loss.
 * Each is a composition of autograd ops, so backward comes for free. */
#include "tg_nn.h"

/* mean_r sum_c bce(logits[r,c], targets[r,c]) */
tg_tensor *tg_loss_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                                   tg_tensor *targets)
{
    return tg_mean(tp, tg_bce_with_logits(tp, logits, targets));
}

/* mean_r sum_c (pred[r,c] - target[r,c])^2. pred and target have one
 * shape: a target [R, 1] against a prediction [R, C] is a mistake that
 * broadcasting would hide. */
tg_tensor *tg_loss_mse(tg_tape *tp, tg_tensor *pred, tg_tensor *target)
{
    tg_check_tensors("loss_mse", 2, (const tg_tensor *[]){pred, target});
    bool same = pred->ndim == target->ndim;
    for (int d = 0; same && d < pred->ndim; d++)
        same = pred->shape[d] == target->shape[d];
    if (!same) {
        char sp[64], st[64];
        tg_fatal("loss_mse", "shapes differ: prediction %s, target %s",
                 tg_shape_str(pred, sp), tg_shape_str(target, st));
    }
    tg_tensor *diff = tg_sub(tp, pred, target);
    return tg_mean(tp, tg_sum_rows(tp, tg_square(tp, diff)));
}

/* mean_r -log softmax(logits[r])[labels[r]] */
tg_tensor *tg_loss_softmax_xent(tg_tape *tp, tg_tensor *logits,
                                const int *labels)
{
    return tg_mean(tp, tg_softmax_xent(tp, logits, labels));
}

tg_tensor *tg_loss_nll(tg_tape *tp, tg_tensor *logp, const int *labels)
{
    return tg_mean(tp, tg_nll(tp, logp, labels));
}
