/* d/dx sum(x * x) = 2x, through tapegrad built as a subproject. */
#include <stdio.h>
#include <tapegrad.h>

int main(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tensor_new2(1, 3);
    for (int i = 0; i < 3; i++)
        x->data[i] = (float)i + 1.0f;
    tg_tensor_require_grad(x);
    tg_backward(tp, tg_sum(tp, tg_mul(tp, x, x)));
    int ok = x->grad[0] == 2.0f && x->grad[1] == 4.0f && x->grad[2] == 6.0f;
    printf("tapegrad %s as a subproject: grad %g %g %g: %s\n", TG_VERSION,
           (double)x->grad[0], (double)x->grad[1], (double)x->grad[2],
           ok ? "ok" : "WRONG");
    tg_tensor_free(x);
    tg_tape_free(tp);
    return ok ? 0 : 1;
}
