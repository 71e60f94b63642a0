#include "kernels/backend.h"
// Placeholder: the cpu backend work fills this in.
