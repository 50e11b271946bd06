// conveyor's own declaration (see model/src/dist/gloo_decls/README.md): ProcessGroupGloo.hpp
// only names Gloo's types behind pointers; context.h declares them all.
#pragma once
#include <gloo/context.h>
