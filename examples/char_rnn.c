/* char_rnn: a character-level language model, a GRU (or LSTM) cell unrolled
 * over windows of a text, trained with truncated backpropagation through
 * time, then sampled from; or (--cell attention) one causal self-attention
 * block over the window, a small GPT. Shows that recurrent and attention
 * models work on the tape: the loss (bits per character) falls and the
 * samples start to look like the text. Written with the public nn API only
 * (tapegrad.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad.h"

#ifndef TG_DEFAULT_TEXT
#define TG_DEFAULT_TEXT "data/text/sonnets.txt"
#endif

enum { MAX_TEXT = 16 << 20 };

enum { CELL_GRU, CELL_LSTM, CELL_ATTENTION };

typedef struct options {
    const char *text;
    int cell;
    int epochs, steps, hidden, seq, batch, threads, sample;
    float lr, temperature;
    uint64_t seed;
} options;

static options parse_options(int argc, char **argv)
{
    options o = {0};
    static const char *const cells[] = {"gru", "lstm", "attention", NULL};
    cli_choice cell = {cells, 0, 0};
    const cli_flag flags[] = {
        {"text", CLI_STR, &o.text, 0, 0, "FILE", TG_DEFAULT_TEXT,
         "training text, bytes"},
        {"cell", CLI_CHOICE, &cell, 0, 0, "gru|lstm|attention", "gru",
         "the model: a recurrent cell, or one causal self-attention block "
         "(4 heads when --hidden is a multiple of 4) with a GELU MLP, "
         "pre-LayerNorm, learned positions"},
        {"epochs", CLI_INT, &o.epochs, 1, 100000, "N", "10", "epochs"},
        {"steps", CLI_INT, &o.steps, 1, 1 << 24, "N", "100",
         "training steps per epoch"},
        {"hidden", CLI_INT, &o.hidden, 1, 8192, "N", "128",
         "hidden units (attention: the model's width)"},
        {"seq", CLI_INT, &o.seq, 1, 4096, "N", "32",
         "characters per window, the length of backpropagation through "
         "time"},
        CLI_FLAG_BATCH(&o.batch, "32"),
        {"lr", CLI_FLOAT, &o.lr, 0, 10, "X", "3e-3",
         "peak Adam learning rate, with linear warm-up and cosine decay"},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        {"sample", CLI_INT, &o.sample, 0, 1 << 20, "N", "300",
         "characters sampled after training, 0 = none"},
        {"temperature", CLI_FLOAT, &o.temperature, 0, 100, "X", "0.8",
         "sampling temperature (with --sample N > 0)"},
    };
    CLI_PARSE(
        argc, argv, flags,
        "usage: char_rnn [options]\n"
        "Trains a character-level GRU, LSTM or self-attention model on a "
        "text file, a batch of windows a step, and prints the loss per "
        "epoch and samples from the model.\n",
        "Exit status: 0 done; 1 standard output could not be written (a "
        "pipe whose reader ended, as with | head, or a full disk: training "
        "stops); 2 bad flags or text; 3 the loss became NaN/Inf.\n");
    o.cell = cell.chosen;
    /* a sampling flag with no sampling was ignored without a word */
    if (o.sample == 0 && cli_given(&o.temperature))
        cli_usage_error("--temperature is for sampling, which --sample 0 "
                        "turns off");
    return o;
}

/* The text as vocabulary indices; vocab[k] is the byte of index k (bytes
 * in increasing order). Returns the length, or -1 after printing why. */
static long read_text(const char *path, int seq, int **ids,
                      unsigned char *vocab, int *n_vocab)
{
    /* O_NONBLOCK: a FIFO opens at once and is refused, instead of waiting
     * for a writer for ever */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    struct stat st;
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f && fd >= 0 && errno == ENOMEM) /* the stream's own memory */
        tg_out_of_memory("text", "%s: out of memory opening it", path);
    if (!f || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        cli_error("%s: %s", path, !f ? strerror(errno) : "not a regular file");
        if (f)
            fclose(f);
        else if (fd >= 0)
            close(fd);
        return -1;
    }
    unsigned char *buf = malloc(MAX_TEXT + 1);
    if (!buf) /* not bad text */
        tg_out_of_memory("text", "%s: out of memory", path);
    size_t len = fread(buf, 1, MAX_TEXT + 1, f);
    bool err = ferror(f);
    fclose(f);
    /* fewer bytes than the file held when opened: it was truncated (or
     * rewritten) while being read, and a prefix of it had trained without
     * a word. (/proc files say 0 bytes: only a size given is held to.) */
    bool shrank = !err && len <= MAX_TEXT && (off_t)len < st.st_size;
    if (err || len > MAX_TEXT || shrank || len < (size_t)seq + 2) {
        cli_error("%s: %s", path,
                  err      ? "read error"
                  : shrank ? "file shrank while reading"
                  : len > MAX_TEXT
                      ? "larger than 16 MB"
                      : "too short for one window (need --seq + 2 bytes)");
        free(buf);
        return -1;
    }
    int index[256];
    bool present[256] = {false};
    for (size_t i = 0; i < len; i++)
        present[buf[i]] = true;
    *n_vocab = 0;
    for (int b = 0; b < 256; b++)
        if (present[b]) {
            index[b] = *n_vocab;
            vocab[(*n_vocab)++] = (unsigned char)b;
        }
    *ids = malloc(len * sizeof **ids);
    if (!*ids)
        tg_out_of_memory("text", "%s: out of memory", path);
    for (size_t i = 0; i < len; i++)
        (*ids)[i] = index[buf[i]];
    free(buf);
    return (long)len;
}

/* One pre-LayerNorm transformer block: h += attention(ln1(h)), then
 * h += ff2(gelu(ff1(ln2(h)))), over characters embedded with their
 * positions. */
typedef struct attention_block {
    tg_embedding_layer chars, pos;
    tg_layer_norm_layer ln1, ln2;
    tg_dense_layer q, k, v, proj, ff1, ff2;
    int heads;
} attention_block;

typedef struct model {
    tg_params *params;
    int cell;
    tg_gru_cell gru;
    tg_lstm_cell lstm;
    attention_block attn;
    tg_dense_layer out;
    int vocab, hidden;
} model;

/* One time step: the state (h, and c for the LSTM) moves on; returns the
 * logits [B, vocab] for the next character. */
static tg_tensor *step(tg_tape *tp, const model *m, const int *chars, int B,
                       tg_tensor **h, tg_tensor **c)
{
    tg_tensor *x = tg_one_hot(tp, chars, B, m->vocab);
    if (m->cell == CELL_LSTM)
        tg_lstm_cell_apply(tp, &m->lstm, x, *h, *c, h, c);
    else
        *h = tg_gru_cell_apply(tp, &m->gru, x, *h);
    return tg_dense_apply(tp, &m->out, *h);
}

/* [B, T, heads * dh] rows -> [B, heads, T, dh], and back */
static tg_tensor *split_heads(tg_tape *tp, tg_tensor *x, int B, int T, int H)
{
    int dh = tg_tensor_cols(x) / H;
    x = tg_reshape(tp, x, 4, (int[]){B, T, H, dh});
    return tg_permute(tp, x, (int[]){0, 2, 1, 3});
}
static tg_tensor *merge_heads(tg_tape *tp, tg_tensor *x)
{
    int B = x->shape[0], H = x->shape[1], T = x->shape[2], dh = x->shape[3];
    x = tg_permute(tp, x, (int[]){0, 2, 1, 3});
    return tg_reshape(tp, x, 2, (int[]){B * T, H * dh});
}

/* The attention model's logits [B * T, vocab] for windows chars [B, T]
 * (row b * T + t predicts the character after chars[b][t] from it and
 * those before it); pos is 0, 1, ..., T - 1 for each window. */
static tg_tensor *attention_logits(tg_tape *tp, const model *m,
                                   const int *chars, const int *pos, int B,
                                   int T)
{
    const attention_block *a = &m->attn;
    int H = a->heads, D = m->hidden;
    tg_tensor *h = tg_add(tp, tg_embedding_apply(tp, &a->chars, chars, B * T),
                          tg_embedding_apply(tp, &a->pos, pos, B * T));
    tg_tensor *x = tg_layer_norm_apply(tp, &a->ln1, h);
    tg_tensor *q = split_heads(tp, tg_dense_apply(tp, &a->q, x), B, T, H);
    tg_tensor *k = split_heads(tp, tg_dense_apply(tp, &a->k, x), B, T, H);
    tg_tensor *v = split_heads(tp, tg_dense_apply(tp, &a->v, x), B, T, H);
    /* scores [B, H, T, T] / sqrt(dh); a query sees itself and the past */
    tg_tensor *s = tg_scale(tp, tg_matmul(tp, q, k, false, true),
                            1.0f / sqrtf((float)(D / H)));
    tg_tensor *mask = tg_tape_tensor(tp, 4, s->shape, false);
    for (size_t e = 0; e < mask->size; e++) {
        int row = (int)(e / (size_t)T % (size_t)T), col = (int)(e % (size_t)T);
        mask->data[e] = col > row ? -1e9f : 0.0f;
    }
    tg_tensor *att =
        tg_matmul(tp, tg_softmax(tp, tg_add(tp, s, mask)), v, false, false);
    h = tg_add(tp, h, tg_dense_apply(tp, &a->proj, merge_heads(tp, att)));
    x = tg_gelu(
        tp, tg_dense_apply(tp, &a->ff1, tg_layer_norm_apply(tp, &a->ln2, h)));
    h = tg_add(tp, h, tg_dense_apply(tp, &a->ff2, x));
    return tg_dense_apply(tp, &m->out, h);
}

/* Mean cross-entropy per character over a batch of windows drawn uniformly
 * from the text; in and next are filled here, in[t * B + b] (the cells'
 * time steps) or in[b * T + t] (attention's rows), and pos [B * T] for
 * attention. */
static tg_tensor *window_loss(tg_tape *tp, const model *m, const int *ids,
                              long len, int B, int T, tg_rng *rng, int *in,
                              int *next, int *pos)
{
    bool rows = m->cell == CELL_ATTENTION;
    for (int b = 0; b < B; b++) {
        long start = (long)tg_rng_below(rng, (uint32_t)(len - T - 1) + 1);
        for (int t = 0; t < T; t++) {
            int e = rows ? b * T + t : t * B + b;
            in[e] = ids[start + t];
            next[e] = ids[start + t + 1];
        }
    }
    if (rows) {
        for (int e = 0; e < B * T; e++)
            pos[e] = e % T;
        return tg_loss_softmax_xent(tp, attention_logits(tp, m, in, pos, B, T),
                                    next);
    }
    tg_tensor *h = NULL, *c = NULL, *total = NULL;
    for (int t = 0; t < T; t++) {
        tg_tensor *logits = step(tp, m, in + t * B, B, &h, &c);
        tg_tensor *l = tg_loss_softmax_xent(tp, logits, next + t * B);
        total = total ? tg_add(tp, total, l) : l;
    }
    return tg_scale(tp, total, 1.0f / (float)T);
}

/* A sampled byte as text: control bytes other than newline and tab
 * escaped as \xHH, so a model trained on binary data cannot send ESC
 * sequences to the terminal. */
static void put_byte(unsigned char c)
{
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
        printf("\\x%02x", c);
    else
        putchar(c);
}

/* The next character's logits [vocab] after the n characters of hist:
 * the cells carry their state from call to call; attention reads the last
 * seq characters again. */
static const float *next_logits(tg_tape *tp, const model *m, const int *hist,
                                int n, int seq, float *state)
{
    if (m->cell == CELL_ATTENTION) {
        int T = n < seq ? n : seq, pos[4096];
        for (int t = 0; t < T; t++)
            pos[t] = t;
        tg_tensor *logits = attention_logits(tp, m, hist + n - T, pos, 1, T);
        return logits->data + (size_t)(T - 1) * m->vocab;
    }
    tg_tensor *h = tg_tape_view2(tp, state, 1, m->hidden);
    tg_tensor *c = tg_tape_view2(tp, state + m->hidden, 1, m->hidden);
    tg_tensor *logits = step(tp, m, hist + n - 1, 1, &h, &c);
    memcpy(state, h->data, (size_t)m->hidden * sizeof *state);
    if (m->cell == CELL_LSTM)
        memcpy(state + m->hidden, c->data, (size_t)m->hidden * sizeof *state);
    return logits->data;
}

/* n characters from the model, starting from the text's first character,
 * each drawn from softmax(logits / temperature). */
static void sample(tg_tape *tp, const model *m, const unsigned char *vocab,
                   int first, int n, int seq, float temperature, tg_rng *rng)
{
    bool was = tg_tape_set_recording(tp, false);
    float *state = calloc(2 * (size_t)m->hidden, sizeof *state);
    double *p = malloc((size_t)m->vocab * sizeof *p);
    int *hist = malloc((size_t)n * sizeof *hist);
    if (!state || !p || !hist)
        tg_out_of_memory("sampling", "out of memory");
    int ch = first;
    hist[0] = ch;
    put_byte(vocab[ch]);
    for (int i = 1; i < n; i++) {
        tg_tape_reset(tp);
        const float *logits = next_logits(tp, m, hist, i, seq, state);
        double max = logits[0], sum = 0;
        for (int k = 1; k < m->vocab; k++)
            max = logits[k] > max ? logits[k] : max;
        for (int k = 0; k < m->vocab; k++)
            sum += p[k] = exp((logits[k] - max) / temperature);
        double u = tg_rng_uniform(rng) * sum;
        ch = m->vocab - 1;
        for (int k = 0; k < m->vocab; k++)
            if ((u -= p[k]) < 0) {
                ch = k;
                break;
            }
        hist[i] = ch;
        put_byte(vocab[ch]);
        if (i % 64 == 0) /* a reader gone (| head): stop, not sample on */
            cli_flush_stdout(true);
    }
    putchar('\n');
    free(state);
    free(p);
    free(hist);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
}

/* The model of o's cell and size over n_vocab characters, its weights
 * drawn from init. */
static void model_init(model *m, const options *o, int n_vocab, tg_rng *init)
{
    *m = (model){.params = tg_params_new(),
                 .cell = o->cell,
                 .vocab = n_vocab,
                 .hidden = o->hidden};
    int D = o->hidden;
    attention_block *a = &m->attn;
    switch (o->cell) {
    case CELL_LSTM:
        tg_lstm_cell_init(&m->lstm, m->params, "rnn", n_vocab, D, init);
        break;
    case CELL_GRU:
        tg_gru_cell_init(&m->gru, m->params, "rnn", n_vocab, D, init);
        break;
    case CELL_ATTENTION:
        a->heads = D % 4 == 0 ? 4 : 1;
        tg_embedding_layer_init(&a->chars, m->params, "emb", n_vocab, D, init);
        tg_embedding_layer_init(&a->pos, m->params, "pos", o->seq, D, init);
        tg_layer_norm_layer_init(&a->ln1, m->params, "ln1", D, 1e-5f);
        tg_layer_norm_layer_init(&a->ln2, m->params, "ln2", D, 1e-5f);
        tg_dense_layer_init(&a->q, m->params, "q", D, D, TG_INIT_TORCH, init);
        tg_dense_layer_init(&a->k, m->params, "k", D, D, TG_INIT_TORCH, init);
        tg_dense_layer_init(&a->v, m->params, "v", D, D, TG_INIT_TORCH, init);
        tg_dense_layer_init(&a->proj, m->params, "proj", D, D, TG_INIT_TORCH,
                            init);
        tg_dense_layer_init(&a->ff1, m->params, "ff1", D, 4 * D, TG_INIT_TORCH,
                            init);
        tg_dense_layer_init(&a->ff2, m->params, "ff2", 4 * D, D, TG_INIT_TORCH,
                            init);
        break;
    }
    tg_dense_layer_init(&m->out, m->params, "out", o->hidden, n_vocab,
                        TG_INIT_TORCH, init);
}

/* What training needs besides the model: the text as indices, the
 * optimizer and its schedule, a tape, the window buffers and the stream of
 * window positions. */
typedef struct trainer {
    const int *ids;
    long len;
    tg_optim *opt;
    tg_tape *tp;
    int *in, *next, *pos; /* [batch, seq] each */
    tg_rng data;
    int64_t total, warmup; /* steps in all, of linear warm-up */
} trainer;

/* Epoch e (from 0): o->steps steps of clipped, scheduled Adam on random
 * windows, then its line. Returns 0, or 3 after saying the loss is not
 * finite. */
static int train_epoch(trainer *t, model *m, const options *o, int e)
{
    double sum = 0, norm = 0;
    for (int s = 0; s < o->steps; s++) {
        tg_tape_reset(t->tp);
        tg_params_zero_grad(m->params);
        tg_tensor *loss = window_loss(t->tp, m, t->ids, t->len, o->batch,
                                      o->seq, &t->data, t->in, t->next, t->pos);
        if (!isfinite(loss->data[0])) {
            cli_error("loss is %g at step %lld", (double)loss->data[0],
                      (long long)t->opt->step);
            return 3;
        }
        tg_backward(t->tp, loss);
        norm += tg_clip_grad_norm(m->params, 5.0f);
        t->opt->lr = t->total > 1
                         ? tg_lr_cosine_warmup(o->lr, t->opt->step, t->warmup,
                                               t->total, 0.1f * o->lr)
                         : o->lr;
        tg_optim_step(t->opt);
        sum += loss->data[0];
    }
    printf("epoch %d: loss %.4f nats = %.3f bits/char, mean grad norm %.3f\n",
           e + 1, sum / o->steps, sum / o->steps / log(2.0), norm / o->steps);
    cli_flush_stdout(true);
    return 0;
}

/* The model's parameter count over a vocabulary of V characters. */
static double model_params(const options *o, int V)
{
    double D = o->hidden;
    if (o->cell == CELL_ATTENTION) /* emb, pos, 2 LayerNorms, q k v proj,
                                      ff1, ff2, out */
        return (V + o->seq) * D + 4 * D + 4 * (D * D + D) + 4 * D * D + 4 * D +
               4 * D * D + D + D * V + V;
    double G = o->cell == CELL_LSTM ? 4 : 3; /* gates */
    return G * D * (V + D) + 2 * G * D + D * V + V;
}

/* A model past what a parameter set holds (512 M floats), or a step past
 * the machine's memory, is refused before anything is allocated (the flags
 * allow --batch 65536 --seq 4096 --hidden 8192: 6e17 bytes, which died
 * out of memory; attention's parameters past the set aborted in
 * tg_params_add). One step takes about 300 bytes per batch row, character
 * and hidden unit (measured: 250 for a GRU, 285 for an LSTM, attention
 * about as much), 16 per logit (logits, softmax, gradient), 16 per
 * parameter (value, gradient, Adam's two moments) and, for attention, its
 * scores [batch, heads, seq, seq] in about ten copies (mask, sums,
 * softmax, gradients: 40 bytes each). */
static void check_memory(const options *o, int V)
{
    double params = model_params(o, V);
    if (params > (double)(1 << 29)) {
        cli_error("--hidden %d makes a model of %.3g M parameters, more "
                  "than a parameter set holds (%d M)",
                  o->hidden, params / 1e6, 1 << 9);
        exit(2);
    }
    double rows = (double)o->batch * o->seq;
    double need = 300.0 * rows * o->hidden + 16.0 * rows * V + 16.0 * params;
    if (o->cell == CELL_ATTENTION)
        need += 40.0 * (o->hidden % 4 == 0 ? 4 : 1) * rows * o->seq;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double have = pages > 0 && page > 0 ? (double)pages * page : 0.0;
    if (have > 0.0 && need > have) {
        cli_error("--batch %d, --seq %d and --hidden %d need about "
                  "%.3g GB for one step, more than this machine's %.3g GB",
                  o->batch, o->seq, o->hidden, need / 1e9, have / 1e9);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    cli_prog = "char_rnn";
    cli_one_process();
    options o = parse_options(argc, argv);
    tg_set_threads(o.threads);
    int *ids = NULL, n_vocab = 0;
    unsigned char vocab[256];
    long len = read_text(o.text, o.seq, &ids, vocab, &n_vocab);
    if (len < 0)
        return 2;
    check_memory(&o, n_vocab);

    model m;
    tg_rng init, noise;
    tg_rng_seed(&init, o.seed, 0);
    tg_rng_seed(&noise, o.seed, 2);
    model_init(&m, &o, n_vocab, &init);
    trainer t = {.ids = ids,
                 .len = len,
                 .opt = tg_adam_new(m.params, o.lr),
                 .tp = tg_tape_new(),
                 .in =
                     malloc(3 * (size_t)o.batch * (size_t)o.seq * sizeof(int)),
                 .total = (int64_t)o.epochs * o.steps};
    if (!t.in)
        tg_out_of_memory("training batch", "out of memory");
    t.next = t.in + (size_t)o.batch * (size_t)o.seq;
    t.pos = t.next + (size_t)o.batch * (size_t)o.seq;
    tg_rng_seed(&t.data, o.seed, 1);
    t.warmup = t.total / 20 < t.total - 1 ? t.total / 20 : t.total - 1;
    printf("char_rnn: %ld characters, %d distinct, %s %d, %zu parameters; "
           "uniform guess: %.3f bits/char\n",
           len, n_vocab,
           o.cell == CELL_ATTENTION ? "attention"
           : o.cell == CELL_LSTM    ? "LSTM"
                                    : "GRU",
           o.hidden, tg_params_numel(m.params), log2((double)n_vocab));
    cli_flush_stdout(true);

    int status = 0;
    for (int e = 0; e < o.epochs && status == 0; e++)
        status = train_epoch(&t, &m, &o, e);
    if (status == 0 && o.sample > 0) {
        printf("sample (temperature %g):\n", (double)o.temperature);
        sample(t.tp, &m, vocab, ids[0], o.sample, o.seq, o.temperature, &noise);
        cli_flush_stdout(true);
    }
    free(t.in);
    free(ids);
    tg_tape_free(t.tp);
    tg_optim_free(t.opt);
    tg_params_free(m.params);
    return status;
}
