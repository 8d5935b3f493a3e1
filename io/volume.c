#include "volume.h"

#include <stdlib.h>

void volume_free(Volume *v)
{
    free(v->image);
    free(v->label);
    v->image = NULL;
    v->label = NULL;
}
