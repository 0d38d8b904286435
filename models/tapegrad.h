/* tapegrad: the one header a user includes. */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include "tg_autograd.h"
#include "tg_nn.h"
#include "tg_dist.h"
#include "tg_vae.h"
#include "tg_vae_score.h"

#endif
