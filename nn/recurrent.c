/* GRU and LSTM cells as composites of ops (dense, split, sigmoid, tanh, mul,
 * add, sub): backward comes from the ops, nothing here is hand-derived.
 * Parameters and gate order are PyTorch's (torch.nn.GRUCell / LSTMCell), so
 * a checkpoint's "<name>.weight_ih" etc. load there unchanged:
 *   weight_ih [G*H, in], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H]
 * with G = 3 gates (r, z, n) for the GRU and 4 (i, f, g, o) for the LSTM. */
#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "layer_init.h"
#include "tg_nn.h"

/* Registers the four tensors and draws them uniform in +-1/sqrt(H), as
 * PyTorch's reset_parameters, in the order ih, hh, bias_ih, bias_hh. */
static void rnn_params(tg_params *ps, const char *op, const char *name,
                       int gates, int in, int hidden, tg_rng *rng,
                       tg_tensor **w_ih, tg_tensor **w_hh, tg_tensor **b_ih,
                       tg_tensor **b_hh)
{
    if (in < 1 || hidden < 1)
        tg_fatal(op, "%s: bad size in=%d hidden=%d", name, in, hidden);
    /* the stacked gates are one dim: gates * hidden wrapped (4 * 1.1e9 to
     * 105032704, a weight of the wrong shape) */
    if (hidden > INT_MAX / gates)
        tg_fatal(op,
                 "%s: hidden=%d: %d gates of it, more than a dim holds (%d)",
                 name, hidden, gates, INT_MAX);
    char key[256];
    int g = gates * hidden;
    snprintf(key, sizeof key, "%s.weight_ih", name);
    *w_ih = tg_params_add(ps, key, 2, (int[]){g, in});
    snprintf(key, sizeof key, "%s.weight_hh", name);
    *w_hh = tg_params_add(ps, key, 2, (int[]){g, hidden});
    snprintf(key, sizeof key, "%s.bias_ih", name);
    *b_ih = tg_params_add(ps, key, 1, (int[]){g});
    snprintf(key, sizeof key, "%s.bias_hh", name);
    *b_hh = tg_params_add(ps, key, 1, (int[]){g});
    float a = 1.0f / sqrtf((float)hidden);
    tg_tensor *all[4] = {*w_ih, *w_hh, *b_ih, *b_hh};
    for (int i = 0; i < 4; i++)
        tg_rng_fill_uniform(rng, all[i]->data, all[i]->size, -a, a);
}

/* x [B, in], h [B, H] (NULL: zeros); checks the shapes. */
static tg_tensor *state_or_zeros(tg_tape *tp, const char *op, tg_tensor *x,
                                 int in, tg_tensor *h, int hidden,
                                 const char *what)
{
    char a[64], b[64];
    if (!x)
        tg_fatal(op, "x is NULL");
    if (x->ndim != 2 || x->shape[1] != in)
        tg_fatal(op, "x %s, want [B, %d]", tg_shape_str(x, a), in);
    if (!h)
        return tg_tape_tensor2(tp, x->shape[0], hidden, true);
    if (h->ndim != 2 || h->shape[0] != x->shape[0] || h->shape[1] != hidden)
        tg_fatal(op, "%s %s, want [%d, %d] for x %s", what, tg_shape_str(h, a),
                 x->shape[0], hidden, tg_shape_str(x, b));
    return h;
}

void tg_gru_cell_init(tg_gru_cell *c, tg_params *ps, const char *name, int in,
                      int hidden, tg_rng *rng)
{
    layer_init_check("gru_cell_init", c, ps, name, true, rng);
    rnn_params(ps, "gru_cell_init", name, 3, in, hidden, rng, &c->weight_ih,
               &c->weight_hh, &c->bias_ih, &c->bias_hh);
    c->in = in;
    c->hidden = hidden;
}

/* r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
 * z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
 * n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
 * h' = (1 - z) * n + z * h = n + z * (h - n) */
tg_tensor *tg_gru_cell_apply(tg_tape *tp, const tg_gru_cell *c, tg_tensor *x,
                             tg_tensor *h)
{
    if (!c)
        tg_fatal("gru_cell", "NULL cell");
    h = state_or_zeros(tp, "gru_cell", x, c->in, h, c->hidden, "h");
    tg_tensor *gi[3], *gh[3];
    tg_split(tp, tg_dense(tp, x, c->weight_ih, c->bias_ih), 3, gi);
    tg_split(tp, tg_dense(tp, h, c->weight_hh, c->bias_hh), 3, gh);
    tg_tensor *r = tg_sigmoid(tp, tg_add(tp, gi[0], gh[0]));
    tg_tensor *z = tg_sigmoid(tp, tg_add(tp, gi[1], gh[1]));
    tg_tensor *n = tg_tanh(tp, tg_add(tp, gi[2], tg_mul(tp, r, gh[2])));
    return tg_add(tp, n, tg_mul(tp, z, tg_sub(tp, h, n)));
}

void tg_lstm_cell_init(tg_lstm_cell *c, tg_params *ps, const char *name, int in,
                       int hidden, tg_rng *rng)
{
    layer_init_check("lstm_cell_init", c, ps, name, true, rng);
    rnn_params(ps, "lstm_cell_init", name, 4, in, hidden, rng, &c->weight_ih,
               &c->weight_hh, &c->bias_ih, &c->bias_hh);
    c->in = in;
    c->hidden = hidden;
}

/* [i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh, split in four
 * c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
 * h' = sigmoid(o) * tanh(c') */
void tg_lstm_cell_apply(tg_tape *tp, const tg_lstm_cell *c, tg_tensor *x,
                        tg_tensor *h, tg_tensor *cell, tg_tensor **h_out,
                        tg_tensor **cell_out)
{
    if (!c)
        tg_fatal("lstm_cell", "NULL cell");
    if (!h_out || !cell_out)
        tg_fatal("lstm_cell", "h_out and cell_out must not be NULL");
    h = state_or_zeros(tp, "lstm_cell", x, c->in, h, c->hidden, "h");
    cell = state_or_zeros(tp, "lstm_cell", x, c->in, cell, c->hidden, "cell");
    tg_tensor *gates[4];
    tg_split(tp,
             tg_add(tp, tg_dense(tp, x, c->weight_ih, c->bias_ih),
                    tg_dense(tp, h, c->weight_hh, c->bias_hh)),
             4, gates);
    tg_tensor *i = tg_sigmoid(tp, gates[0]);
    tg_tensor *f = tg_sigmoid(tp, gates[1]);
    tg_tensor *g = tg_tanh(tp, gates[2]);
    tg_tensor *o = tg_sigmoid(tp, gates[3]);
    tg_tensor *c_new = tg_add(tp, tg_mul(tp, f, cell), tg_mul(tp, i, g));
    *cell_out = c_new;
    *h_out = tg_mul(tp, o, tg_tanh(tp, c_new));
}
