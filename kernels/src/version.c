/* version.c - library version, the one symbol every build exports. */
#include "nano_version.h"

NANO_API const char *nano_version(void) { return NANO_VERSION_STRING; }
