#include "formats/tensor_file.h"
